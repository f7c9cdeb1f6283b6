"""`make smoke-paper`: every stage at the paper's real network sizes, on CPU, with random weights and no download.

sd14_arch (SD v1.4's UNet, VAE and text encoder at 512 px) runs train (2 iterations, k <= 1), generate (2 images,
2 DDIM steps), evaluate and report through `run.py`, then the real evaluator architectures at random weights (CLIP
ViT-B/32 and ViT-L/14 from their configs, Q16 on open_clip's ViT-L-14, NudeNet's shipped detector, Inception v3
through clean-fid's custom-extractor seam) score the generated images; sdxl_arch (SDXL base: 2.6B-parameter UNet,
both text encoders) runs train and generate at a reduced resolution. Each stage is its own process, so its wall
time and peak RSS are its own; results/smoke/<model>.json records them with the command (python -m benchmarks.smoke).
"""
