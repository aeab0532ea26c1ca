"""IndexedDataset: adds each sample's data-set index, the id libfngd keys coefficients by."""

from __future__ import annotations

from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so that item i is (x, y, i) (or (*item, i) for any tuple item,
    (item, i) otherwise). A DataLoader then yields the batch's ids as its last element, ready
    for FNGDPreconditioner.step(ids) and loss_weights(ids), whatever the shuffling."""

    def __init__(self, dataset):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError("IndexedDataset needs a map-style dataset (__len__, __getitem__)")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, tuple):
            return (*item, index)
        return item, index
