"""refprune.testing.strategies.architectures draws both kinds of network (an MLP
starts with Linear, a convnet with Conv2d) and passes the activations on."""

from hypothesis import given, settings

from refprune.nn import Conv2d, Linear, Sigmoid
from refprune.testing.strategies import architectures


def test_architectures_draw_mlps_and_convnets():
    firsts, acts = set(), set()

    @settings(max_examples=60, derandomize=True, database=None)
    @given(architectures(activations=(Sigmoid,)))
    def collect(arch):
        firsts.add(type(arch.model[0]))
        acts.update(type(layer).__name__ for layer in arch.model if type(layer).__name__ in
                    ("ReLU", "Tanh", "Sigmoid", "Softplus"))

    collect()
    assert firsts == {Linear, Conv2d}
    assert acts == {"Sigmoid"}
