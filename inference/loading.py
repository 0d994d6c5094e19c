"""Batches of any torch ``Dataset`` of ``(x, y)`` pairs, and the checks made on data before a fit.

In-memory sets (:class:`~pyro_pstn.data.ImageSet`, ``TensorDataset``) are indexed a whole batch
at a time; any other ``Dataset`` item by item and collated by torch's default collate. Either way
batches come from a ``DataLoader`` in a given order (the engine's seeded epoch order), on the CPU,
and go to the device as they are drawn.
"""
from __future__ import annotations

from typing import Iterator

import pyro
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pyro_pstn.data import ImageSet
from pyro_pstn.models import check_images, check_labels


def tensor_backed(data: Dataset) -> bool:
    """Whether ``data`` holds its examples in two tensors that a list of indices slices at once."""
    return isinstance(data, ImageSet) or (isinstance(data, TensorDataset) and len(data.tensors) == 2)


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return (data.images, data.labels) if isinstance(data, ImageSet) else tuple(data.tensors)


def batch_loader(data: Dataset, batch_size: int, order: torch.Tensor | None = None) -> DataLoader:
    """A DataLoader of ``(x, y)`` batches of ``data`` in ``order`` (default: as stored)."""
    indices = order.tolist() if order is not None else list(range(len(data)))
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    # a generator of its own: a DataLoader draws a base seed for its workers from it on every pass,
    # which from torch's global generator would shift the draws of training
    generator = torch.Generator()
    if tensor_backed(data):  # data[list] is the whole batch
        return DataLoader(data, sampler=batches, batch_size=None, generator=generator)
    return DataLoader(data, batch_sampler=batches, generator=generator)


def batches(data: Dataset, batch_size: int, device: torch.device | str, order: torch.Tensor | None = None,
            check: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` on ``device``; ``check`` refuses a batch with NaN or infinite inputs (made on the
    CPU batch before the copy, so it costs no device synchronisation)."""
    for x, y in batch_loader(data, batch_size, order):
        if check and not torch.isfinite(x).all():
            raise ValueError(f"a batch of the data set holds {int((~torch.isfinite(x)).sum())} NaN or infinite values; "
                             "clean the data")
        yield x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)


def as_image_set(data: Dataset) -> ImageSet:
    """``data`` in memory as an :class:`ImageSet` (the stacked engine's input)."""
    if isinstance(data, ImageSet):
        return data
    if tensor_backed(data):
        return ImageSet(*_tensors(data))
    x, y = next(iter(batch_loader(data, max(len(data), 1))))
    return ImageSet(x, torch.as_tensor(y))


def check_dataset(model: nn.Module, data: Dataset, what: str = "training") -> bool:
    """Refuse data that ``model`` cannot be fitted on, with a ValueError that says what to do:
    not a Dataset of ``(x, y)`` pairs, empty, float labels, labels outside 0..K−1, inputs that do
    not fit the model (checked against its spec, else by one forward pass), NaN or infinite inputs.

    Returns whether every example was checked (in-memory sets); otherwise the engine checks each
    batch for NaN as it is drawn.
    """
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise ValueError(f"the {what} data must be a torch Dataset of (x, y) pairs (ImageSet, TensorDataset, ...), got "
                         f"{type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"the {what} data set is empty: give at least one example")
    spec = getattr(model, "spec", None)
    event_dim = getattr(model, "event_dim", 3)
    if tensor_backed(data):
        x, y = _tensors(data)
        full = True
    else:
        item = data[0]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"the {what} data set's items must be (x, y) pairs, got {type(item).__name__}")
        x, y = next(iter(batch_loader(data, min(len(data), 2))))
        y, full = torch.as_tensor(y), False
    try:
        check_images(x, event_dim=event_dim, spec=spec)
        num_classes = spec.num_classes if spec is not None else _probe_classes(model, x[:2])
        check_labels(y, len(x), num_classes)
    except ValueError as err:
        raise ValueError(f"{what} data: {err}") from None
    return full


def _probe_classes(model: nn.Module, x: torch.Tensor) -> int | None:
    """The number of classes of a model without a spec, from one forward pass in eval mode with no
    gradient (the random state restored, so training draws what it would have drawn)."""
    if not getattr(model, "classifies", False):
        return None
    state, was_training = pyro.util.get_rng_state(), model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            logits = model.model(x.to(device))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"inputs of shape {tuple(x.shape[1:])} do not fit the model ({type(err).__name__}: "
                         f"{str(err).splitlines()[0]}); build the model for the data's spec "
                         "(build_model(name, data.spec)) or reshape the data") from None
    finally:
        model.train(was_training)
        pyro.util.set_rng_state(state)
    return int(logits.shape[-1])
