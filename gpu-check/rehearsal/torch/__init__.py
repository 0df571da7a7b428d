"""A stand-in for PyTorch, for gpu-check/test-local.sh only: the rehearsal's jobs run server_check.py's job script
unchanged on a machine without GPUs. A "GPU" is any /dev/nvidiaN the job can see; allocating a CUDA tensor opens
/dev/nvidia0 (a test device with /dev/zero's numbers), so the device cgroup must allow it. Nothing here is a
measurement of a GPU."""
import os
import re
import time

__version__ = "0.0+rehearsal"


def _gpu_nodes():
    return sorted(d for d in os.listdir("/dev") if re.match(r"^nvidia\d+$", d))


class _Cuda:
    @staticmethod
    def is_available():
        return bool(_gpu_nodes())

    @staticmethod
    def device_count():
        return len(_gpu_nodes())

    @staticmethod
    def get_device_name(index=0):
        return "Rehearsal GPU (%s)" % _gpu_nodes()[index]

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def max_memory_allocated():
        return 3 * 8192 * 8192 * 4


cuda = _Cuda()


class _Tensor:
    def __matmul__(self, other):
        time.sleep(0.02)
        return self


def randn(*shape, device=None):
    if device == "cuda":
        with open("/dev/" + _gpu_nodes()[0], "rb") as f:
            f.read(1)
    return _Tensor()
