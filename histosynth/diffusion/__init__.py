"""Stable Diffusion stages: latent cache, LoRA fine-tuning, sampling (diffusers + peft + accelerate)."""
