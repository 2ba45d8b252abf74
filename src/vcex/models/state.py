"""Run a user's models without changing them: eval mode and frozen parameters while vcex runs them.

A classifier or latent model handed to vcex belongs to its user. Every place that runs one (explainers,
fits, evaluation helpers) does so inside :func:`evaluating`, which puts every submodule in eval mode (so
dropout is off and batch norm reads, never writes, its running statistics) and every parameter's
``requires_grad`` off (gradients flow to inputs only), and afterwards puts back each submodule's own
``training`` flag and each parameter's own ``requires_grad``, exactly, even when the work raised.

Restoring with ``module.train(mode)`` on the top module is not enough: it sets every submodule to the
top's mode, so a model whose parts were in different modes (a frozen backbone in eval, a head in train),
or one wrapped in a new :class:`vcex.Classifier` (whose own flag is a new module's ``True``), comes back
changed. Fits that need batch statistics of a model train their own ``copy.deepcopy`` of it instead.

>>> with evaluating(classifier, latent_model):
...     probs = classifier(latent_model.decode(latents)).softmax(1)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from torch import nn

Function = TypeVar("Function", bound=Callable)


def modules_of(*models: object) -> list[nn.Module]:
    """Every distinct ``nn.Module`` that ``models`` run: all submodules of each module; for an object that is
    not a module (a latent model with ``encode``/``decode``), the submodules of the modules among its
    attributes. ``None`` and plain callables contribute nothing."""
    found: dict[int, nn.Module] = {}
    for model in models:
        if isinstance(model, nn.Module):
            roots = [model]
            wrapped = vars(model).get("wrapped")  # a wrapper's plain-object model (UserLatentModel)
            if wrapped is not None and not isinstance(wrapped, nn.Module):
                roots += modules_of(wrapped)
        elif model is not None and hasattr(model, "__dict__"):
            roots = [value for value in vars(model).values() if isinstance(value, nn.Module)]
        else:
            roots = []
        for root in roots:
            for module in root.modules():
                found.setdefault(id(module), module)
    return list(found.values())


@contextmanager
def evaluating(*models: object) -> Iterator[None]:
    """Inside the block, every module ``models`` run (see :func:`modules_of`) is in eval mode with its
    parameters' ``requires_grad`` off; on leaving it (also on an error), each submodule's ``training`` flag
    and each parameter's ``requires_grad`` are what they were before. Nests: an inner block restores what
    the outer one set. Parameters and buffers are never written here."""
    modules = modules_of(*models)
    parameters = {id(p): p for module in modules for p in module.parameters(recurse=False)}
    modes = [(module, module.training) for module in modules]
    flags = [(parameter, parameter.requires_grad) for parameter in parameters.values()]
    try:
        # each flag set on its own module, not by module.eval(): a user's train() override may do more
        for module, _ in modes:
            module.training = False
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)


def evaluates(*names: str) -> Callable[[Function], Function]:
    """Decorator form of :func:`evaluating` for functions: the arguments called ``names`` (or, as
    ``"self.latent_model"``, an attribute of one) are evaluated for the duration of each call."""

    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: object, **kwargs: object) -> object:
            bound = signature.bind(*args, **kwargs)
            models = []
            for name in names:
                first, *rest = name.split(".")
                value = bound.arguments.get(first)
                for attribute in rest:
                    value = getattr(value, attribute, None)
                models.append(value)
            with evaluating(*models):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = ["evaluates", "evaluating", "modules_of"]
