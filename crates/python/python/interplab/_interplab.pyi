"""Type stubs of the native module (crates/python/src)."""

from os import PathLike
from typing import Any, Callable, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

TokensLike = Union[str, Sequence[str], npt.ArrayLike]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
HookFn = Callable[[np.ndarray, "HookPoint"], Optional[npt.ArrayLike]]
ReturnType = Optional[Literal["logits", "loss", "both"]]

class InterplabError(RuntimeError):
    """An Interplab error; the message is the line the CLI prints after `error: `."""

class HookPoint:
    """Where a hook fired."""

    @property
    def name(self) -> str: ...
    def layer(self) -> Optional[int]: ...

class Model:
    """A loaded model: the hooked transformer and its tokenizer."""

    @property
    def source(self) -> str: ...
    @property
    def cfg(self) -> dict[str, Any]: ...  # an interplab.Config
    @property
    def W_E(self) -> np.ndarray: ...
    @property
    def W_U(self) -> np.ndarray: ...
    def hook_names(self) -> list[str]: ...
    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: bool = True) -> np.ndarray: ...
    def to_str_tokens(self, input: TokensLike, prepend_bos: bool = True) -> list[str]: ...
    def to_string(self, tokens: npt.ArrayLike) -> Union[str, list[str]]: ...
    def to_single_token(self, text: str) -> int: ...
    def forward(self, input: TokensLike, return_type: ReturnType = "logits", prepend_bos: bool = True) -> Any: ...
    def __call__(self, input: TokensLike, return_type: ReturnType = "logits", prepend_bos: bool = True) -> Any: ...
    def run_with_cache(
        self,
        input: TokensLike,
        names_filter: NamesFilter = None,
        remove_batch_dim: bool = False,
        return_type: ReturnType = "logits",
        prepend_bos: bool = True,
    ) -> tuple[Any, dict[str, np.ndarray]]: ...
    def run_with_hooks(
        self,
        input: TokensLike,
        fwd_hooks: Optional[Sequence[tuple[Union[str, Callable[[str], bool]], HookFn]]] = None,
        return_type: ReturnType = "logits",
        prepend_bos: bool = True,
    ) -> Any: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...

class Sae:
    """A sparse autoencoder or transcoder in SAELens' layout."""

    d_in: int
    d_sae: int
    d_out: int
    architecture: str
    transcoder: bool
    hook_name: Optional[str]
    hook_name_out: Optional[str]
    cfg: dict[str, Any]
    path: PathLike
    W_enc: np.ndarray
    W_dec: np.ndarray
    b_enc: np.ndarray
    b_dec: np.ndarray
    def encode(self, x: npt.ArrayLike) -> np.ndarray: ...
    def decode(self, acts: npt.ArrayLike) -> np.ndarray: ...
    def forward(self, x: npt.ArrayLike) -> np.ndarray: ...

def load(source: str, quantized_weights: bool = False) -> Model: ...
def _lab_run(
    name: str, config_json: str, out: Optional[str] = None, force: bool = False, quantized_weights: bool = False
) -> tuple[str, str, str]: ...
def _lab_experiments() -> list[tuple[str, str]]: ...
def _lab_defaults(name: str) -> str: ...
def _sae_load(path: Union[str, PathLike]) -> Sae: ...
