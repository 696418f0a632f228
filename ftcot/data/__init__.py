"""The data: task files (the built-in twelve and a project's own), their sources, readers and the
paper's train/test split (stage fetch)."""
