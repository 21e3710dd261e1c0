"""Deeplearning4j interchange: ND4J binary arrays and ``ModelSerializer`` zips.

ND4J binary arrays (``Nd4j.write`` / ``Nd4j.read``)
---------------------------------------------------
A big-endian stream (Java ``DataOutputStream``) holding two buffers, the shape information
first and then the data.  Each buffer is

1. the allocation mode, written with ``writeUTF`` (unsigned 16-bit byte length, then the
   bytes): ``HEAP``, ``JAVACPP`` or ``DIRECT`` in older files, ``LONG_SHAPE`` or
   ``MIXED_DATA_TYPES`` in newer ones;
2. the element count: a 32-bit int for the three older modes, a 64-bit int for the newer;
3. the data type, written with ``writeUTF`` (``FLOAT``, ``DOUBLE``, ``HALF``, ``INT``, ...);
4. the elements, big-endian.

The shape buffer (``INT`` or ``LONG`` elements) holds ``2*rank + 4`` values: ``rank``, the
shape, the strides (in elements), a slot that is the buffer offset in files written before
``MIXED_DATA_TYPES`` and the "extras" flags (data type bits, empty-array bit) after it, the
element-wise stride, and the order (99 ``'c'`` or 102 ``'f'``).

:func:`read_array` honours the strides as written (including non-contiguous ones), returns
a C-contiguous NumPy array in native byte order, and refuses malformed input with a
``ValueError`` *before* allocating anything from an unchecked count: every count is checked
against the bytes actually available (for file objects of unknown length the data is read
in bounded chunks, so memory never exceeds what the input really holds).

:func:`write_array` writes the modern format that DL4J 1.0.0-beta and later write and read
(and that :func:`read_array` reads): ``MIXED_DATA_TYPES`` headers with 64-bit counts, a
``LONG`` shape buffer with C-order contiguous strides, the data-type bit of the "extras"
slot set (plus the empty-array bit for arrays with no element), element-wise stride 1,
order ``'c'``, and the elements in C order.

ModelSerializer zips
--------------------
:func:`load` reads ``configuration.json`` and ``coefficients.bin`` of a
``MultiLayerNetwork`` or of a ``ComputationGraph`` that is a plain chain of supported layers,
and returns an :class:`lstmfast.Sequential` holding the same layers and parameters.  The
JSON styles of DL4J 0.8 (``{"gravesLSTM": {...}}``, ``"activationFn": {"TanH": {}}``)
through 1.0.0-beta7 (``"@class"`` names), and the older plain-string activations and losses,
are understood.  Supported layers: ``GravesLSTM``, ``LSTM``, ``GravesBidirectionalLSTM``,
``Bidirectional`` (around ``LSTM`` or ``GravesLSTM``), ``RnnOutputLayer``, ``DenseLayer``,
``OutputLayer`` (``FrozenLayer`` wrappers are unwrapped), with the ``RnnToFeedForward`` /
``FeedForwardToRnn`` preprocessors around dense layers on sequences (lstmfast's dense
layers apply per time step).  Anything else - another layer, vertex or preprocessor, an
activation or loss lstmfast does not have (or has with other constants), layers without
bias, ``NWC`` data format, a non-chain graph, a parameter count or key list that does not
match - is a ``ValueError`` naming it; a wrong model is never returned.

What is imported exactly is what determines the network's function (layers, sizes,
activations, loss, parameters).  Training settings are carried over only where they map
exactly - truncated-BPTT lengths, an ``Sgd`` / ``Nesterovs`` / ``Adam`` updater with a fixed
learning rate shared by every layer, L2 shared by every layer - and listed in
``read_model(path)[0].not_imported`` otherwise (e.g. RMSProp, dropout, gradient
normalisation, L1); ``updaterState.bin`` is not read.

:func:`load_graph` evaluates other ComputationGraphs for inference (merge and element-wise
vertices, SimpleRnn, global pooling over time) as a :class:`Graph`.

:func:`save` writes a ``MultiLayerNetwork`` zip in the 1.0.0-beta6 JSON style
(``configuration.json``) with ``coefficients.bin`` (``[1, nParams]`` in the model's dtype);
it writes no ``updaterState.bin`` (DL4J treats it as optional: the restored network starts
with a fresh updater state; lstmfast's updater state is not in DL4J's updater-block layout).
The zip is written to a temporary file in the target directory and moved over the target
with ``os.replace``, so an interrupted save never destroys an existing file.  A model
loaded from a ``ComputationGraph`` is saved as the equivalent ``MultiLayerNetwork``.  Not
saved: DropConnect settings of the layers; classical (non-Nesterov) momentum, which DL4J has
no updater for, is written as plain ``Sgd``.
"""

from .config import LayerSpec, ModelSpec, parse_configuration
from .graph import Graph, GraphSpec, VertexSpec, load_graph, parse_graph
from .model import build, configuration_json, load, read_model, save
from .nd4j import read_array, write_array

__all__ = [
    "read_array",
    "write_array",
    "load",
    "save",
    "read_model",
    "load_graph",
    "Graph",
    "GraphSpec",
    "VertexSpec",
    "parse_configuration",
    "parse_graph",
    "build",
    "configuration_json",
    "LayerSpec",
    "ModelSpec",
]
