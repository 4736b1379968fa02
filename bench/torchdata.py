"""The torch view of tasks, kept apart so that importing bench.tasks does not import torch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class ExampleDataset(Dataset):
    def __init__(self, tasks, length: int, offset: int = 0):
        if not tasks:
            raise ValueError("ExampleDataset needs at least one task")
        self.tasks = list(tasks)
        self.length = int(length)
        self.offset = int(offset)
        self.n_params = max(t.effect.n_params for t in self.tasks)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        t = i % len(self.tasks)
        task = self.tasks[t]
        ex = task.example(self.offset + i // len(self.tasks))
        params = np.full(self.n_params, np.nan, np.float32)
        if ex.true_params01 is not None:
            params[: len(ex.true_params01)] = ex.true_params01
        return {
            "input": torch.from_numpy(np.ascontiguousarray(ex.input)),
            "reference": torch.from_numpy(np.ascontiguousarray(ex.reference)),
            "target": torch.from_numpy(np.ascontiguousarray(ex.target)),
            "params": torch.from_numpy(np.asarray(params, dtype=np.float32)),
            "task": torch.tensor(t),
        }


def loader(tasks, length: int, batch_size: int, *, offset: int = 0, workers: int = 0, shuffle: bool = False,
           seed: int = 0) -> DataLoader:
    """A DataLoader rendering examples in ``workers`` processes (0 = in the main process)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ExampleDataset(tasks, length, offset), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, generator=g, drop_last=False,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())
