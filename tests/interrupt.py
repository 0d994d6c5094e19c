"""Stop a fit after a given epoch, as a killed process would (its checkpoint stays behind)."""


class Interrupt(Exception):
    pass


def stop_after(epoch: int):
    """An ``on_epoch_end`` callback that raises :class:`Interrupt` once ``epoch`` has finished."""

    def on_epoch_end(trainer, record):
        if record.epoch == epoch:
            raise Interrupt

    return on_epoch_end
