"""Shared test helper: a checkpoint of (model, optimizer, scheduler) through ``torch.save`` and ``torch.load`` at its
defaults (``weights_only=True``) into fresh objects."""

import io

import torch


def reload_checkpoint(model, opt, sched, fresh):
    """Save the three state dicts to bytes, load them into ``fresh()``'s new triple, and return that triple."""
    buffer = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)  # torch's default weights_only=True: checkpoints must load without pickled code
    new = fresh()
    new[0].load_state_dict(saved["m"])
    new[1].load_state_dict(saved["o"])
    new[2].load_state_dict(saved["s"])
    return new
