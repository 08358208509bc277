"""h-space directions for an AsyrpPipeline: a tensor delta_h (C,h,w) (the same shift at every t), an f_t module
(delta_h_t = f_t(h_t, t)), or a list of them, which add. Their files (`files`, with the authors' releases in
`official`), the paper's f_t (`f_t`), directions found without text (`finding`) and learned from two texts
(`learning`)."""

from .f_t import DeltaBlock
from .files import load_direction, save_direction
from .finding import mean_difference_direction, principal_directions
from .learning import learn_direction

__all__ = ["DeltaBlock", "learn_direction", "load_direction", "mean_difference_direction", "principal_directions",
           "save_direction"]
