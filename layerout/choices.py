"""The values the command lines offer and check, without torch: built-in datasets and models,
BatchNorm modes of frozen units, the training fast paths (the built-in datasets: ``layerout.datasets``).

``--help`` and argument errors are answered from here before torch is imported (importing it
takes seconds); the modules that implement each choice (``layerout.data``, ``layerout.models``,
``layerout.freezer``, ``layerout.fastpath``) take their tuples from here, and ``layerout.models``
checks at import that its built-in registry is ``BUILTIN_MODELS``.
"""
from __future__ import annotations

from layerout.datasets import DATASETS  # noqa: F401 - the built-in datasets' registry (name -> its facts)

IMAGEFOLDER = "imagefolder:"  # imagefolder:PATH, a folder in torchvision's ImageFolder layout
# the models layerout.models registers, in its order (python -m layerout.models describes them)
BUILTIN_MODELS = ("mnist_shallow", "vgg16", "resnet20", "resnet56", "resnet110", "digits_cnn", "digits_tiny")
BN_MODES = ("train", "eval")
BN_CHOICES = ("auto", *BN_MODES)  # auto: the schedule family's choice (``Schedule.bn_frozen``)
FAST_PATHS = ("auto", "off", "cudagraph")  # TrainConfig.fast_path; auto: graphs where they can run
