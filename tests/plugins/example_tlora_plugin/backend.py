"""A backend registered by a plugin: the tiny SD-XL pipeline under another name, with no bundled layer table (its
size checks read the skeleton it names)."""

from tlora_bench import BackendSpec
from tlora_bench.models.sdxl import SDXLBackend
from tlora_bench.models.tiny import tiny_model_folder


class TinyPluginBackend(SDXLBackend):
    @classmethod
    def load(cls, spec, *, source=None, **options):
        return super().load(spec, source=source or str(tiny_model_folder("tiny-sdxl")), **options)


BACKEND = BackendSpec(name="tiny-plugin", summary="the tiny SD-XL pipeline, registered by a plugin",
                      loader=TinyPluginBackend, hub_id=None, skeleton="tlora_bench.models.tiny:tiny_unet",
                      resolution=64, num_inference_steps=4, guidance_scale=5.0)
