"""Which process of how many: one process, or one of several started by `accelerate launch` or `torchrun`.

accelerate's PartialState reads what the launcher set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT, or MPI's variables) and starts torch.distributed's process group: gloo between CPU processes,
NCCL between GPUs. On the CPU it must be told so (cpu=True): without it, each process of a torchrun-style
launch on a machine without a GPU finds no accelerator, sees a world of one, and would do all the work.
A process started alone never touches accelerate or torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from xmod_explorer.errors import ExplorerError

# How long a process waits for the others at a barrier: one may still be working through its last block
# while another has finished; a process that dies ends the whole launch anyway (torchrun stops the rest).
BARRIER_TIMEOUT = timedelta(hours=24)
WORLD_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_count() -> int:
    """How many processes the launcher started (1 when this process was started alone)."""
    for name in WORLD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


@dataclass
class Processes:
    """This process's place among the processes of one run. device: the accelerator this process should use
    (cuda:LOCAL_RANK with several GPUs), or None to keep what was asked for."""

    rank: int = 0
    count: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str | None = None

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.count > 1:
            torch.distributed.barrier()

    def share(self, value: object) -> object:
        """Process 0's value, on every process (a picklable object)."""
        if self.count == 1:
            return value
        box = [value if self.rank == 0 else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.count > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def join(device: str = "auto") -> Processes:
    """This process's place: alone, or among those a launcher started (device: what the user asked for)."""
    if launched_count() <= 1:
        return Processes()
    from accelerate import PartialState

    name = str(device or "auto").strip().lower()
    cpu = name == "cpu" or (name == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    if state.num_processes != launched_count():
        raise ExplorerError(
            f"The launcher started {launched_count()} processes, but torch.distributed joined {state.num_processes}: "
            "every process would do all the work. Launch with torchrun or accelerate launch (see the README)."
        )
    return Processes(
        rank=state.process_index,
        count=state.num_processes,
        local_rank=state.local_process_index,
        backend=state.backend,
        device=None if cpu else str(state.device),
    )
