"""Specs of the Keras applications backbones (ImageNet weights downloaded by Keras on first use).

Never imports Keras: constructors are "module:callable" strings resolved by ``bottleneck.backbones.build``. Every
number below was measured from the installed Keras with ``include_top=False, weights=None`` at the default
size (tests/test_backbones.py rebuilds each one and checks it).
"""

from __future__ import annotations

from bottleneck.backbones.spec import BackboneSpec

# Preprocessing per family, from each `keras.applications.<module>.preprocess_input`:
#   caffe: vgg16/19, resnet (v1)      tf: resnet_v2, inception_v3, inception_resnet_v2, xception, mobilenet,
#   torch: densenet                       mobilenet_v2, nasnet
#   none:  efficientnet, efficientnet_v2, convnext, mobilenet_v3 -- the Keras model starts with its own
#          Rescaling/Normalization layers (include_preprocessing=True by default) and expects 0..255 pixels.
# Smallest input side: Keras' `obtain_input_shape(min_size=...)`; 75 for the Inception stems, 71 for Xception.

# (name, Keras callable, family, preprocess, input size, feature dim, feature map side, params, min size)
_TABLE = [
    ("vgg16", "VGG16", "vgg", "caffe", 224, 512, 7, 14_714_688, 32),
    ("vgg19", "VGG19", "vgg", "caffe", 224, 512, 7, 20_024_384, 32),
    ("resnet50", "ResNet50", "resnet", "caffe", 224, 2048, 7, 23_587_712, 32),
    ("resnet101", "ResNet101", "resnet", "caffe", 224, 2048, 7, 42_658_176, 32),
    ("resnet152", "ResNet152", "resnet", "caffe", 224, 2048, 7, 58_370_944, 32),
    ("resnet50_v2", "ResNet50V2", "resnet_v2", "tf", 224, 2048, 7, 23_564_800, 32),
    ("resnet101_v2", "ResNet101V2", "resnet_v2", "tf", 224, 2048, 7, 42_626_560, 32),
    ("resnet152_v2", "ResNet152V2", "resnet_v2", "tf", 224, 2048, 7, 58_331_648, 32),
    ("inception_v3", "InceptionV3", "inception", "tf", 299, 2048, 8, 21_802_784, 75),
    ("inception_resnet_v2", "InceptionResNetV2", "inception", "tf", 299, 1536, 8, 54_336_736, 75),
    ("xception", "Xception", "xception", "tf", 299, 2048, 10, 20_861_480, 71),
    ("mobilenet", "MobileNet", "mobilenet", "tf", 224, 1024, 7, 3_228_864, 32),
    ("mobilenet_v2", "MobileNetV2", "mobilenet_v2", "tf", 224, 1280, 7, 2_257_984, 32),
    ("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", "none", 224, 576, 7, 939_120, 32),
    ("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", "none", 224, 960, 7, 2_996_352, 32),
    ("densenet121", "DenseNet121", "densenet", "torch", 224, 1024, 7, 7_037_504, 32),
    ("densenet169", "DenseNet169", "densenet", "torch", 224, 1664, 7, 12_642_880, 32),
    ("densenet201", "DenseNet201", "densenet", "torch", 224, 1920, 7, 18_321_984, 32),
    ("efficientnet_b0", "EfficientNetB0", "efficientnet", "none", 224, 1280, 7, 4_049_571, 32),
    ("efficientnet_b1", "EfficientNetB1", "efficientnet", "none", 240, 1280, 8, 6_575_239, 32),
    ("efficientnet_b2", "EfficientNetB2", "efficientnet", "none", 260, 1408, 9, 7_768_569, 32),
    ("efficientnet_b3", "EfficientNetB3", "efficientnet", "none", 300, 1536, 10, 10_783_535, 32),
    ("efficientnet_b4", "EfficientNetB4", "efficientnet", "none", 380, 1792, 12, 17_673_823, 32),
    ("efficientnet_b5", "EfficientNetB5", "efficientnet", "none", 456, 2048, 15, 28_513_527, 32),
    ("efficientnet_b6", "EfficientNetB6", "efficientnet", "none", 528, 2304, 17, 40_960_143, 32),
    ("efficientnet_b7", "EfficientNetB7", "efficientnet", "none", 600, 2560, 19, 64_097_687, 32),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "efficientnet_v2", "none", 224, 1280, 7, 5_919_312, 32),
    ("efficientnet_v2_b1", "EfficientNetV2B1", "efficientnet_v2", "none", 240, 1280, 8, 6_931_124, 32),
    ("efficientnet_v2_b2", "EfficientNetV2B2", "efficientnet_v2", "none", 260, 1408, 9, 8_769_374, 32),
    ("efficientnet_v2_b3", "EfficientNetV2B3", "efficientnet_v2", "none", 300, 1536, 10, 12_930_622, 32),
    ("efficientnet_v2_s", "EfficientNetV2S", "efficientnet_v2", "none", 384, 1280, 12, 20_331_360, 32),
    ("efficientnet_v2_m", "EfficientNetV2M", "efficientnet_v2", "none", 480, 1280, 15, 53_150_388, 32),
    ("efficientnet_v2_l", "EfficientNetV2L", "efficientnet_v2", "none", 480, 1280, 15, 117_746_848, 32),
    ("convnext_tiny", "ConvNeXtTiny", "convnext", "none", 224, 768, 7, 27_820_128, 32),
    ("convnext_small", "ConvNeXtSmall", "convnext", "none", 224, 768, 7, 49_454_688, 32),
    ("convnext_base", "ConvNeXtBase", "convnext", "none", 224, 1024, 7, 87_566_464, 32),
    ("convnext_large", "ConvNeXtLarge", "convnext", "none", 224, 1536, 7, 196_230_336, 32),
    ("convnext_xlarge", "ConvNeXtXLarge", "convnext", "none", 224, 2048, 7, 348_147_968, 32),
    ("nasnet_mobile", "NASNetMobile", "nasnet", "tf", 224, 1056, 7, 4_269_716, 32),
    ("nasnet_large", "NASNetLarge", "nasnet", "tf", 331, 4032, 11, 84_916_818, 32),
]

SPECS = [
    BackboneSpec(
        name=_name,
        constructor=f"keras.applications:{_fn}",
        preprocess=_pre,
        input_size=_size,
        feature_dim=_dim,
        feature_hw=(_hw, _hw),
        params=_params,
        family=_family,
        min_size=_min,
    )
    for _name, _fn, _family, _pre, _size, _dim, _hw, _params, _min in _TABLE
]
