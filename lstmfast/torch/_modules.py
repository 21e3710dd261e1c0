"""The modules: ``torch.nn.LSTM`` subclasses whose forward pass runs lstmfast's kernels."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import layers as _layers
from .._checks import check_choice
from ..functional import ACTIVATIONS, GATE_ACTIVATIONS
from ._function import (NUMPY_DTYPES, PEEPHOLE_ROWS_FROM_KERNEL, TORCH_FROM_KERNEL, _blocks,
                        kernel_weights)
from ._ops import enable_compile, run_directions_side_by_side, run_layer

__all__ = ["LSTM", "GravesLSTM", "GravesBidirectionalLSTM", "UnsupportedError",
           "InputTypeError"]

_TORCH_DTYPES = {v: k for k, v in NUMPY_DTYPES.items()}


class UnsupportedError(NotImplementedError):
    """An nn.LSTM feature lstmfast's kernels do not compute (yet): the message names it."""


class InputTypeError(TypeError, AttributeError):
    """The input is not a tensor (nn.LSTM fails with an AttributeError there)."""


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return value


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    return value


class LSTM(nn.LSTM):
    """``torch.nn.LSTM`` computed by lstmfast's kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None, *, peepholes=False,
    activation="tanh", gate_activation="sigmoid")``: nn.LSTM's arguments, checks, parameters,
    initialisation, inputs, outputs and errors (it *is* an ``nn.LSTM``), plus lstmfast's own
    options, keyword-only. ``peepholes=True`` adds a parameter ``weight_peephole_l{k}[_reverse]``
    ``[3, hidden_size]`` per layer and direction (rows: input, forget, output gate; the input and
    forget gates see ``c[t-1]``, the output gate ``c[t]``, as in DL4J's GravesLSTM).

    ``proj_size > 0`` (LSTMP) as nn.LSTM: parameters ``weight_hr_l{k}[_reverse]``
    ``[proj_size, hidden_size]``, ``h`` (output, h_n) projected; with peepholes these still act
    on the ``hidden_size`` cell. Not computed: devices other than the CPU and dtypes other than
    float32/float64 raise :class:`UnsupportedError`; second-order derivatives raise
    ``DoubleBackwardError``. ``PackedSequence``: see the package docstring.
    """

    _dl4j_init = False         # GravesLSTM: DL4J's initialisation
    _sum_directions = False    # GravesBidirectionalLSTM: DL4J adds the two directions

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
                 peepholes=False, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0):
        _check_int("num_layers", num_layers)
        _check_int("proj_size", proj_size)
        _check_bool("peepholes", peepholes)
        options = {
            "peepholes": peepholes,
            "activation": check_choice("activation", activation, ACTIVATIONS),
            "gate_activation": check_choice("gate_activation", gate_activation,
                                             GATE_ACTIVATIONS),
            "forget_gate_bias_init": float(forget_gate_bias_init),
        }
        resolved = torch.get_default_dtype() if dtype is None else dtype
        if resolved not in NUMPY_DTYPES:
            raise UnsupportedError(f"dtype={resolved}: lstmfast computes in torch.float32 or "
                                   f"torch.float64")
        if device is not None and torch.device(device).type != "cpu":
            raise UnsupportedError(f"device={device!r}: lstmfast computes on the CPU")
        # set before nn.LSTM's constructor, which calls reset_parameters
        object.__setattr__(self, "_lstmfast", options)
        object.__setattr__(self, "_peephole_names", [])
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)
        if peepholes:
            for layer in range(self.num_layers):
                for direction in range(self._directions):
                    name = f"weight_peephole_l{layer}{'_reverse' if direction else ''}"
                    setattr(self, name, nn.Parameter(torch.empty(3, hidden_size, device=device,
                                                                 dtype=dtype)))
                    self._peephole_names.append(name)
                    self._all_weights[layer * self._directions + direction].append(name)
                    self._flat_weights_names.append(name)
            self._init_flat_weights()
            self.reset_parameters()
        # where each layer's and direction's parameters sit in _flat_weights (which nn.LSTM
        # keeps up to date when a parameter is replaced): a list lookup per call, not five
        # nn.Module.__getattr__ calls
        positions = {name: i for i, name in enumerate(self._flat_weights_names)}
        self._flat_positions = tuple(
            tuple(positions.get(f"{kind}_l{layer}{'_reverse' if direction else ''}")
                  for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                               "weight_peephole", "weight_hr"))
            for layer in range(self.num_layers) for direction in range(self._directions))

    # ---- options -----------------------------------------------------------------------
    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    peepholes = property(lambda self: self._lstmfast["peepholes"])
    activation = property(lambda self: self._lstmfast["activation"])
    gate_activation = property(lambda self: self._lstmfast["gate_activation"])
    forget_gate_bias_init = property(lambda self: self._lstmfast["forget_gate_bias_init"])

    def extra_repr(self):
        s = super().extra_repr()
        for key, default in (("peepholes", False), ("activation", "tanh"),
                             ("gate_activation", "sigmoid")):
            if self._lstmfast[key] != default:
                s += f", {key}={self._lstmfast[key]!r}"
        return s

    # ---- parameters ----------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self):
        """nn.LSTM's initialisation (uniform in ``±1/sqrt(hidden_size)``), or DL4J's for the
        Graves modules: weights normal with standard deviation ``sqrt(2 / (fan_in +
        fan_out))`` (``fan_in = h``, ``fan_out = nIn + h``), biases zero except the forget gate's
        ``bias_ih`` block, ``forget_gate_bias_init``."""
        if not self._dl4j_init:
            super().reset_parameters()
            return
        h = self.hidden_size
        for layer in range(self.num_layers):
            for direction in range(self._directions):
                w_ih, w_hh, b_ih, b_hh, w_peep = self._layer_parameters(layer, direction)
                w_hr = getattr(self, f"weight_hr_l{layer}{'_reverse' if direction else ''}",
                               None)
                std = math.sqrt(2.0 / (h + w_ih.shape[1] + h))
                for w in (w_ih, w_hh, w_peep, w_hr):
                    if w is not None:
                        w.normal_(0.0, std)
                if b_ih is not None:
                    b_ih.zero_()
                    b_hh.zero_()
                    b_ih[h:2 * h] = self.forget_gate_bias_init

    def _layer_parameters(self, layer, direction):
        """(weight_ih, weight_hh, bias_ih, bias_hh, weight_peephole) of one layer and
        direction; None for what the module does not have."""
        suffix = f"{layer}{'_reverse' if direction else ''}"
        return tuple(getattr(self, f"{kind}_l{suffix}", None)
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                  "weight_peephole"))

    # ---- forward -------------------------------------------------------------------------
    def _check_computable(self, input):
        if isinstance(input, PackedSequence):
            input = input.data
        if not isinstance(input, torch.Tensor):
            raise InputTypeError(f"input: expected a torch.Tensor, got {type(input).__name__}")
        weight = self.weight_ih_l0
        if weight.dtype not in NUMPY_DTYPES:
            raise UnsupportedError(f"the module's dtype is {weight.dtype}: lstmfast computes in "
                                   f"torch.float32 or torch.float64")
        for name, parameter in zip(self._flat_weights_names, self._flat_weights):
            if parameter is not None and parameter.dtype != weight.dtype:
                # (nn.LSTM refuses them too, with a RuntimeError)
                raise RuntimeError(f"{name}: dtype {parameter.dtype} differs from weight_ih_l0's "
                                   f"{weight.dtype}: every parameter must have one dtype "
                                   f"(module.to({weight.dtype}))")
        for name, t in (("weights", weight), ("input", input)):
            if t.device.type != "cpu":
                raise UnsupportedError(f"{name} on {t.device}: lstmfast computes on the CPU")

    def _check_state(self, input, hx, is_batched):
        """nn.LSTM's checks of hx (same exceptions, same messages); returns hx batched."""
        if is_batched:
            if hx[0].dim() != 3 or hx[1].dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx and cx should also be 3-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        else:
            if hx[0].dim() != 2 or hx[1].dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx and cx should also be 2-D but "
                                   f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        self.check_forward_args(input, hx, None)
        self._check_state_tensors(input, hx)
        return hx

    @staticmethod
    def _check_state_tensors(input, hx):
        for name, t in zip(("hx", "cx"), hx):
            if t.dtype != input.dtype:
                raise RuntimeError(f"{name} must have the input's dtype {input.dtype}, got "
                                   f"{t.dtype}")
            if t.device.type != "cpu":
                raise UnsupportedError(f"{name} on {t.device}: lstmfast computes on the CPU")

    def forward(self, input, hx=None):
        """``out, (h_n, c_n) = module(input, (h_0, c_0))``, as nn.LSTM's forward."""
        # parameters swapped in since the last call (torch.func.functional_call), as nn.LSTM
        self._update_flat_weights()
        self._check_computable(input)
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        if not is_batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        if hx is None:
            self.check_input(input, None)
        else:
            hx = self._check_state(input, hx, is_batched)
        x = input.transpose(0, 1) if self.batch_first else input
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        out, h_n, c_n = self._run_layers(x, hx)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not is_batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    def _forward_packed(self, packed, hx):
        """A PackedSequence: padded once, then one pass per layer and direction with each
        sequence's length (the kernels skip the padding; each sequence starts from its
        h_0/c_0 and ends, in each direction, at its own last valid step, as nn.LSTM's packed
        path)."""
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        if hx is None:
            self.check_input(data, batch_sizes)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
            self._check_state_tensors(data, hx)
        padded, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
        out, h_n, c_n = self._run_layers(padded, hx, lengths)    # sorted order
        out = pack_padded_sequence(out, lengths).data
        return (PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices),
                self.permute_hidden((h_n, c_n), unsorted_indices))

    def _run_layers(self, x, hx, lengths=None):
        """All layers on a time-major x [T, mb, input_size] from hx (batched) or zeros, each
        example's first ``lengths[m]`` steps when given (int64 [mb]; the rest is padding, zero
        in out): (out [T, mb, features], h_n, c_n)."""
        # a traced graph is run with and without grad (torch.jit.trace checks it under
        # no_grad): it always keeps what the backward pass needs
        for_backprop = torch.jit.is_tracing() or torch.is_grad_enabled() and (
            x.requires_grad or any(p is not None and p.requires_grad for p in self._flat_weights)
            or (hx is not None and (hx[0].requires_grad or hx[1].requires_grad)))
        options = self._lstmfast
        flat, positions = self._flat_weights, self._flat_positions
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = []
            if self._directions == 2:
                # (two threads on torch's workers: each direction's passes on one of them)
                indices = (2 * layer, 2 * layer + 1)
                both = run_directions_side_by_side(
                    x, [[None if i is None else flat[i] for i in positions[index]]
                        for index in indices],
                    [(None, None) if hx is None else (hx[0][index], hx[1][index])
                     for index in indices],
                    lengths, options["activation"], options["gate_activation"],
                    self._sum_directions, for_backprop)
                if both is not None:
                    x = both[0]
                    for h_n, c_n in both[1:]:
                        hs.append(h_n)
                        cs.append(c_n)
                    if self.dropout and self.training and layer < self.num_layers - 1:
                        x = self._dropout_between_layers(x, lengths)
                    continue
            for direction in range(self._directions):
                index = layer * self._directions + direction
                parameters = [None if i is None else flat[i] for i in positions[index]]
                h0, c0 = (None, None) if hx is None else (hx[0][index], hx[1][index])
                out, h_n, c_n = run_layer(x, *parameters, h0, c0, lengths, direction == 0,
                                          options["activation"], options["gate_activation"],
                                          for_backprop)
                outs.append(out)
                hs.append(h_n)
                cs.append(c_n)
            if len(outs) == 1:
                x = outs[0]
            elif self._sum_directions:
                x = outs[0] + outs[1]
            else:
                x = torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = self._dropout_between_layers(x, lengths)
        if len(hs) == 1:    # one layer, one direction: its own fresh tensors, no copy
            return x, hs[0].unsqueeze(0), cs[0].unsqueeze(0)
        return x, torch.stack(hs), torch.stack(cs)

    def _dropout_between_layers(self, x, lengths):
        """nn.LSTM's dropout between layers: the same call on the same tensor, hence the same
        mask from torch's generator: [T, mb, features], or for packed input the packed data
        [sum of lengths, features]."""
        if lengths is None:
            return F.dropout(x, self.dropout, True)
        packed = pack_padded_sequence(x, lengths)
        x, _ = pad_packed_sequence(
            PackedSequence(F.dropout(packed.data, self.dropout, True), packed.batch_sizes),
            total_length=x.shape[0])
        return x

    # ---- lstmfast's (NumPy, DL4J layout) layers --------------------------------------------
    def _layer_class(self):
        if self.num_layers == 1 and self.proj_size == 0:
            if self._sum_directions:
                return _layers.GravesBidirectionalLSTM
            if not self.bidirectional:
                return _layers.GravesLSTM if self.peepholes else _layers.LSTM
        raise ValueError(f"{type(self).__name__}({self.extra_repr()}) has no lstmfast layer "
                         f"equivalent: to_layer needs num_layers=1 and one direction (or "
                         f"GravesBidirectionalLSTM)")

    def to_layer(self):
        """The equivalent lstmfast (NumPy, DL4J layout) layer, parameters copied (the two
        biases summed; zeros with bias=False)."""
        cls = self._layer_class()
        dtype = NUMPY_DTYPES[self.weight_ih_l0.dtype]
        layer = cls(self.input_size, self.hidden_size, activation=self.activation,
                    gate_activation=self.gate_activation,
                    forget_gate_bias_init=self.forget_gate_bias_init, weight_init="zero",
                    dtype=dtype, seed=0)
        parts = []
        for direction in range(self._directions):
            W, RW, b = kernel_weights(*self._layer_parameters(0, direction))
            parts += [W.ravel(order="F"), RW.ravel(order="F"), b]
        layer.params = np.concatenate(parts).astype(dtype, copy=False)
        return layer

    @classmethod
    def _from_layer_module(cls, layer, batch_first):
        return cls(layer.n_in, layer.n_out, batch_first=batch_first,
                   peepholes=layer.peepholes, activation=layer.activation,
                   gate_activation=layer.gate_activation,
                   dtype=_TORCH_DTYPES[np.dtype(layer.dtype)])

    @classmethod
    def from_layer(cls, layer, *, batch_first=False):
        """A module with the configuration and (copied) parameters of an lstmfast layer: LSTM
        from ``lstmfast.LSTM`` or ``lstmfast.GravesLSTM`` (with peepholes), GravesLSTM from
        ``lstmfast.GravesLSTM``, GravesBidirectionalLSTM from ``lstmfast.GravesBidirectionalLSTM``."""
        accepted = cls._accepted_layers()
        if type(layer) not in accepted:
            raise TypeError(f"{cls.__name__}.from_layer: expected "
                            f"{' or '.join('lstmfast.' + c.__name__ for c in accepted)}, got "
                            f"{type(layer).__name__}")
        if getattr(layer, "reverse", False):     # (the bidirectional layer has no such flag)
            raise ValueError(f"{cls.__name__}.from_layer: the layer processes time in reverse "
                             f"(made with reverse=True, the backward direction of a bidirectional "
                             f"layer, or a layer from an ONNX 'reverse' node); nn.LSTM has no "
                             f"such one-direction layer")
        module = cls._from_layer_module(getattr(layer, "forward_layer", layer), batch_first)
        with torch.no_grad():
            for name, value in module._parameters_from_flat(np.asarray(layer.params)).items():
                getattr(module, name).copy_(torch.from_numpy(value))
        return module

    def _flat_size(self):
        """The size of the module's parameters in DL4J's flat layout (``layer.params``)."""
        h = self.hidden_size
        cols = 4 * h + (3 if self.peepholes else 0)
        return self._directions * (self.input_size * 4 * h + h * cols + (4 * h if self.bias else 0))

    def _parameters_from_flat(self, flat):
        """{parameter name: array} of a one-layer module from DL4J's flat layout: per direction
        W [nIn, 4h], RW [h, 4h(+3)] (Fortran order), then b [4h] (absent with bias=False);
        bias_hh is zero (DL4J has one bias)."""
        h, n_in = self.hidden_size, self.input_size
        size = flat.size // self._directions
        n_w, n_rw = n_in * 4 * h, h * (4 * h + (3 if self.peepholes else 0))
        values = {}
        for direction in range(self._directions):
            part = flat[direction * size:(direction + 1) * size]
            W = part[:n_w].reshape((n_in, 4 * h), order="F")
            RW = part[n_w:n_w + n_rw].reshape((h, -1), order="F")
            suffix = f"_l0{'_reverse' if direction else ''}"
            values["weight_ih" + suffix] = _blocks(W.T, TORCH_FROM_KERNEL)
            values["weight_hh" + suffix] = _blocks(RW[:, :4 * h].T, TORCH_FROM_KERNEL)
            if self.bias:
                values["bias_ih" + suffix] = _blocks(part[n_w + n_rw:], TORCH_FROM_KERNEL)
                values["bias_hh" + suffix] = np.zeros(4 * h, dtype=flat.dtype)
            if self.peepholes:
                values["weight_peephole" + suffix] = np.ascontiguousarray(
                    RW[:, 4 * h:].T[list(PEEPHOLE_ROWS_FROM_KERNEL)])
        return values

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # earlier versions of these modules (one layer, one direction or DL4J's bidirectional
        # pair) kept one flat parameter `params` in DL4J's layout: read it as the named ones
        legacy = prefix + "params"
        if legacy in state_dict and prefix + "weight_ih_l0" not in state_dict:
            state_dict = dict(state_dict)
            flat = state_dict.pop(legacy)
            for name, value in self._legacy_parameters(flat).items():
                state_dict[prefix + name] = value
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _legacy_parameters(self, flat):
        expected = self._flat_size() if self.num_layers == 1 else None
        if (not isinstance(flat, torch.Tensor) or flat.dim() != 1 or expected is None
                or flat.numel() != expected):
            shape = list(flat.shape) if isinstance(flat, torch.Tensor) else type(flat).__name__
            raise RuntimeError(
                f"state dict key 'params' (the flat DL4J-layout parameter of earlier lstmfast "
                f"versions): got {shape}, but {type(self).__name__}({self.extra_repr()}) "
                f"takes {'no flat parameter (num_layers > 1)' if expected is None else f'[{expected}]'}"
                f"; build the module the state dict was saved from (input_size, hidden_size, "
                f"bias, peepholes / GravesLSTM) or convert through lstmfast's layers "
                f"(layer.params = flat; {type(self).__name__}.from_layer(layer))")
        values = self._parameters_from_flat(flat.detach().cpu().numpy())
        return {name: torch.from_numpy(value).to(flat.dtype) for name, value in values.items()}

    @classmethod
    def _accepted_layers(cls):
        return (_layers.LSTM, _layers.GravesLSTM)

    @classmethod
    def from_torch(cls, module):
        """A ``torch.nn.LSTM`` -> this module: same configuration, dtype and
        parameters (copied), hence the same function."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"{cls.__name__}.from_torch: expected a torch.nn.LSTM, got "
                            f"{type(module).__name__}")
        new = LSTM(module.input_size, module.hidden_size, module.num_layers, module.bias,
                   module.batch_first, module.dropout, module.bidirectional, module.proj_size,
                   dtype=module.weight_ih_l0.dtype)
        new.load_state_dict(module.state_dict())
        return new


class GravesLSTM(LSTM):
    """DL4J's GravesLSTM: :class:`LSTM` with peepholes (always) and DL4J's initialisation.

    ``GravesLSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
    activation="tanh", gate_activation="sigmoid", forget_gate_bias_init=1.0)``."""

    _dl4j_init = True

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
                 activation="tanh", gate_activation="sigmoid", forget_gate_bias_init=1.0):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, peepholes=True,
                         activation=activation, gate_activation=gate_activation,
                         forget_gate_bias_init=forget_gate_bias_init)

    @classmethod
    def _from_layer_module(cls, layer, batch_first):
        return cls(layer.n_in, layer.n_out, batch_first=batch_first, activation=layer.activation,
                   gate_activation=layer.gate_activation,
                   forget_gate_bias_init=layer.forget_gate_bias_init,
                   dtype=_TORCH_DTYPES[np.dtype(layer.dtype)])

    @classmethod
    def _accepted_layers(cls):
        return (_layers.GravesLSTM,)

    @classmethod
    def from_torch(cls, module):
        raise TypeError("GravesLSTM.from_torch: nn.LSTM has no peepholes; use "
                        "lstmfast.torch.LSTM.from_torch")


class GravesBidirectionalLSTM(GravesLSTM):
    """DL4J's GravesBidirectionalLSTM: two GravesLSTM directions with their own parameters,
    ``out`` = forward + backward direction (DL4J sums; ``nn.LSTM(bidirectional=True)``
    concatenates), ``h_n``/``c_n`` ``[2, mb, h]`` (forward direction first).

    ``GravesBidirectionalLSTM(input_size, hidden_size, bias=True, batch_first=False,
    device=None, dtype=None, *, activation="tanh", gate_activation="sigmoid",
    forget_gate_bias_init=1.0)``; parameters named as nn.LSTM's with ``bidirectional=True``."""

    _sum_directions = True

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, device=None,
                 dtype=None, *, activation="tanh", gate_activation="sigmoid",
                 forget_gate_bias_init=1.0):
        super().__init__(input_size, hidden_size, 1, bias, batch_first, 0.0, True, 0, device,
                         dtype, activation=activation, gate_activation=gate_activation,
                         forget_gate_bias_init=forget_gate_bias_init)

    @classmethod
    def _accepted_layers(cls):
        return (_layers.GravesBidirectionalLSTM,)

    @classmethod
    def from_torch(cls, module):
        raise TypeError("GravesBidirectionalLSTM.from_torch: nn.LSTM has no peepholes and "
                        "concatenates its directions; use lstmfast.torch.LSTM.from_torch")


enable_compile(LSTM)
