"""The default network: a multilayer perceptron sized from the data at fit time."""

import math

import torch
from torch import nn
from torch.nn.utils import skip_init

__all__ = ["ACTIVATIONS", "MLP", "SeededDropout"]

#: Activation names accepted by :class:`MLP`, as in ``sklearn.neural_network``.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": nn.Identity,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class SeededDropout(nn.Module):
    """Dropout that draws its masks from its own random generator.

    ``torch.nn.Dropout`` draws from torch's global generator, which every
    thread of the process shares: two models trained at once in threads would
    change each other's masks. This layer keeps a private generator per device,
    so a fit with a fixed seed gives the same result whatever else runs.

    Parameters
    ----------
    p : float, default=0.5
        Probability of zeroing an element, in ``[0, 1)``.
    seed : int, default=0
        Seed of the private generator.
    """

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}.")
        self.p = p
        self.seed = seed
        self._generators = {}

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        generator = self._generators.get(x.device)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            self._generators[x.device] = generator
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=generator)
        return x * keep / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_generators"] = {}
        return state


class MLP(nn.Module):
    """Multilayer perceptron returning logits.

    :class:`~skrobust.RobustNetClassifier` fills ``n_features`` and ``n_classes``
    from the data and ``random_state`` from its own; set the rest through
    ``module__`` parameters, e.g. ``module__hidden_layer_sizes=(256, 256)``.

    Parameters
    ----------
    n_features : int
        Number of input features.
    n_classes : int
        Number of classes (output logits).
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Width of each hidden layer, as in ``sklearn.neural_network.MLPClassifier``.
    activation : {"relu", "tanh", "logistic", "identity", "gelu", "silu"}, default="relu"
        Activation after each hidden layer.
    dropout : float, default=0.0
        Dropout probability after each hidden activation.
    random_state : int or None, default=None
        Seed of the weight initialisation and of the dropout masks. The weights
        are drawn from private generators, never from torch's global one.

    Examples
    --------
    >>> import torch
    >>> from skrobust.modules import MLP
    >>> net = MLP(n_features=4, n_classes=3, hidden_layer_sizes=(8,), random_state=0)
    >>> net(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, n_features, n_classes, hidden_layer_sizes=(128, 128),
                 activation="relu", dropout=0.0, random_state=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        sizes = [n_features, *hidden_layer_sizes, n_classes]
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(
                "n_features, n_classes and hidden_layer_sizes must be positive integers, "
                f"got n_features={n_features!r}, n_classes={n_classes!r}, "
                f"hidden_layer_sizes={hidden_layer_sizes!r}.")
        seed = int(torch.randint(2**62, ()) if random_state is None else random_state) % 2**62
        generator = torch.Generator().manual_seed(seed)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(_seeded_linear(n_in, n_out, generator))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(SeededDropout(dropout, seed=seed + i + 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)


def _seeded_linear(n_in, n_out, generator):
    """A Linear layer with torch's default initialisation drawn from ``generator``."""
    layer = skip_init(nn.Linear, n_in, n_out)
    bound = 1 / math.sqrt(n_in)
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer
