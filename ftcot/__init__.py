"""finetune-cot: Fine-tune-CoT (Ho, Schmid & Yun, ACL 2023) as a library behind a DVC pipeline."""

__version__ = "0.1.0"
