"""genpage_hf: GenPage generative whole-page recommendation as a Hugging Face Transformers plugin.

Importing the package registers the GenPage config, models and tokenizer with the Auto classes, and
marks them for `register_for_auto_class`, so every `save_pretrained` folder also loads with
`trust_remote_code=True` where genpage_hf is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from .catalog import Catalog, CatalogEntity, CatalogRow
from .configuration_genpage import GenPageConfig
from .modeling_genpage import GenPageForPageGeneration, GenPageForPageReward, GenPageFusedEmbedding, GenPageModel
from .tokenization_genpage import GenPageTokenizer
from .tokenizer_spec import SpecError, default_spec_path, load_spec, validate_spec

__version__ = "0.1.0"

AutoConfig.register(GenPageConfig.model_type, GenPageConfig, exist_ok=True)
AutoModel.register(GenPageConfig, GenPageModel, exist_ok=True)
AutoModelForCausalLM.register(GenPageConfig, GenPageForPageGeneration, exist_ok=True)
AutoModelForSequenceClassification.register(GenPageConfig, GenPageForPageReward, exist_ok=True)
AutoTokenizer.register(GenPageConfig, fast_tokenizer_class=GenPageTokenizer, exist_ok=True)

GenPageConfig.register_for_auto_class()
GenPageModel.register_for_auto_class("AutoModel")
GenPageForPageGeneration.register_for_auto_class("AutoModelForCausalLM")
GenPageForPageReward.register_for_auto_class("AutoModelForSequenceClassification")
GenPageTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = [
    "Catalog",
    "CatalogEntity",
    "CatalogRow",
    "GenPageConfig",
    "GenPageForPageGeneration",
    "GenPageForPageReward",
    "GenPageFusedEmbedding",
    "GenPageModel",
    "GenPageTokenizer",
    "SpecError",
    "default_spec_path",
    "load_spec",
    "validate_spec",
]
