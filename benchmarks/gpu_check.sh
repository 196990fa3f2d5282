#!/usr/bin/env bash
# Real CUDA timings of the same benchmarks, for sessions that are lent a GPU machine.
# Usage (from the repository root, torch with CUDA installed): bash benchmarks/gpu_check.sh
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
# every installed diffusers attention backend, reduced, against the native (SDPA) result
python benchmarks/gpu_backends.py
# bfloat16 matching scores (tensor cores): the same nearest dst as float32 scores, and the time of each
python benchmarks/gpu_match_scores.py
# host syncs per step (whole model and regional): 1 per reuse step expected (the timestep read)
python benchmarks/gpu_sync.py
# the CogVideoX-shaped model, then a longer sequence where attention dominates (with the windowed
# matching too: never run on CUDA so far, so it comes last)
python benchmarks/speed_cogvideox.py --device cuda --dtype bfloat16 --repeats 5 --steps 10
python benchmarks/speed_cogvideox.py --device cuda --dtype bfloat16 --repeats 5 --steps 10 --frames 13 --size 96 --layers 8 --window 0,1,1
