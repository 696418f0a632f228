"""The student: the fine-tuning formats, the models (tiny ones built from a config, pretrained ones
loaded by name), the fine-tuning sets and the training loop (stages split and finetune)."""
