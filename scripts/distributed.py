"""The end of a run on several processes, shared by pre-training, fine-tuning and the tests' 2-process checks."""

import gc

import torch.distributed as dist


def end_process_group() -> None:
    """
    Once nothing holds a DDP model any more: all processes meet, then the process group is destroyed (a no-op on one
    process). gloo left to interpreter exit aborts a process at times (its worker threads free tensors after Python
    is gone: SIGABRT, "terminate called without an active exception"), and destroyed under a live DDP model it hung.
    """
    gc.collect()  # the DDP model's reference cycles
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
