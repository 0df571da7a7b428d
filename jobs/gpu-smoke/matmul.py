"""A GPU smoke test: the device PyTorch sees, and a matrix product on it checked against the CPU."""
import time

import torch

assert torch.cuda.is_available(), "CUDA is not available: does the job have resources.gpus >= 1?"
device = torch.device("cuda:0")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}")

# Correctness: a small product on the GPU equals the CPU's.
a, b = torch.randn(256, 256, dtype=torch.float64), torch.randn(256, 256, dtype=torch.float64)
diff = (a @ b - (a.to(device) @ b.to(device)).cpu()).abs().max().item()
assert diff < 1e-9, f"GPU and CPU products differ by {diff}"
print(f"256x256 float64 matmul matches the CPU (max difference {diff:.1e})")

# Speed: a 8192x8192 float16 product, a figure to compare nodes by.
n = 8192
x, y = torch.randn(n, n, device=device, dtype=torch.float16), torch.randn(n, n, device=device, dtype=torch.float16)
torch.cuda.synchronize()
start, runs = time.perf_counter(), 20
for _ in range(runs):
    x @ y
torch.cuda.synchronize()
seconds = (time.perf_counter() - start) / runs
print(f"{n}x{n} float16 matmul: {2 * n ** 3 / seconds / 1e12:.1f} TFLOP/s")
print("cuda ok")
