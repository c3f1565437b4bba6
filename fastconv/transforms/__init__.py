"""Every preprocessing step and batch augmentation.

Preprocessing (:mod:`fastconv.transforms.preprocess`): :func:`normalize` (``uint8`` images to
standardised float batches ``(N, C, H, W)``, MNIST's statistics :data:`MNIST_MEAN` and
:data:`MNIST_STD` by default), and :class:`Standardize`, :class:`PCAWhitening` and
:class:`ZCAWhitening`, fitted on the training images and then applied to every split.

Augmentations (:mod:`fastconv.transforms.augment`) of a batch ``(N, C, H, W)``, each image drawn
independently from ``rng``: :class:`RandomCrop`, :class:`RandomHorizontalFlip`,
:class:`RandomShift`, :class:`RandomAffine`, :class:`ElasticDistortion` (and their functions
:func:`shift_images`, :func:`random_shift`, :func:`random_affine`, :func:`elastic_distortion`),
and :class:`Compose` to chain transforms.

They are callables ``t(x, rng) -> x`` with the signature of :meth:`fastconv.Trainer.fit`'s
``augment``: the Trainer passes each batch with its per-epoch generator, derived from
``(seed, epoch)``, so an augmented run repeats from its seed and ``resume=True`` stays exact. With
``rng`` None (or an int seed) they draw from ``np.random.default_rng(rng)``. Their reprs name
their settings, which is what a checkpoint records of them. :mod:`fastconv.datasets` re-exports
``normalize``, the MNIST statistics and the shift, affine and elastic augmentations under their
earlier names there.
"""
from .augment import (Compose, ElasticDistortion, RandomAffine, RandomCrop, RandomHorizontalFlip, RandomShift,
                      elastic_distortion, random_affine, random_shift, shift_images)
from .preprocess import MNIST_MEAN, MNIST_STD, PCAWhitening, Standardize, ZCAWhitening, normalize

__all__ = ["Standardize", "PCAWhitening", "ZCAWhitening", "RandomCrop", "RandomHorizontalFlip",
           "Compose", "MNIST_MEAN", "MNIST_STD", "normalize", "shift_images", "random_shift",
           "random_affine", "elastic_distortion", "RandomShift", "RandomAffine", "ElasticDistortion"]
