"""What in a saved model could run code on the machine that loads it, judged from its configs
and its graph before any load API sees it (runner.job.scan reads them from the files).

- Python carried in a Keras config: a `Lambda` layer (tf_keras marshals its function's bytecode
  into .h5 files and SavedModels, and runs it while loading and again on every call) and any
  other function serialized as Python (`"function_type": "lambda"`, Keras 3's `__lambda__`).
- A SavedModel graph's ops: every function of its library, not only the serving signature,
  against an allow-list of ops that only compute. Deny-lists miss what they do not list
  (ProtectAI's modelscan flags `ReadFile` and `WriteFile` only; TensorFlow has many more ops
  that touch files, processes or the network). The checkpoint ops a SavedModel's own saver
  functions use (`SaveV2`, `RestoreV2`, ...) are allowed there and nowhere else.

`load.trust=true` loads such a model anyway, and says so in the job's notes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TRUST_KEY = "load.trust"

# Ops that compute on tensors and variables, and nothing else: what Keras models of both
# generations, their optimizers and their SavedModels' signatures use, and the common
# arithmetic, array, control-flow and neural-network ops beside them. An op missing here that a
# model needs gets a refusal naming it, and load.trust=true.
COMPUTE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert
DisableCopyOnRead
AssignAddVariableOp AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D
BatchMatMul BatchMatMulV2 BatchMatMulV3 BatchToSpaceND BiasAdd BiasAddGrad Bitcast
BitwiseAnd BitwiseOr BitwiseXor BroadcastArgs BroadcastGradientArgs BroadcastTo Bucketize
Case Cast Ceil CheckNumerics CheckNumericsV2 ClipByValue Complex ComplexAbs Concat ConcatV2
ConcatOffset Const ControlTrigger Conv2D Conv2DBackpropFilter Conv2DBackpropInput Conv3D
Conv3DBackpropFilterV2 Conv3DBackpropInputV2 Cos Cosh Cross Cumprod Cumsum DepthToSpace
DepthwiseConv2dNative DepthwiseConv2dNativeBackpropFilter DepthwiseConv2dNativeBackpropInput
Diag DiagPart Digamma Dilation2D DivNoNan Div DynamicPartition DynamicStitch Einsum Elu
EluGrad Empty EnsureShape Equal Erf Erfc Erfinv Exp ExpandDims Expm1 ExtractImagePatches
Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormGrad FusedBatchNormGradV2
FusedBatchNormGradV3 FusedBatchNormV2 FusedBatchNormV3 Gather GatherNd GatherV2 Gelu Greater
GreaterEqual HashTableV2 Identity IdentityN If Imag InTopKV2 Inv InvGrad Invert
InvertPermutation IsFinite IsInf IsNan IsVariableInitialized L2Loss LeakyRelu LeakyReluGrad
LeftShift Less LessEqual Lgamma LinSpace ListDiff Log Log1p LogSoftmax LogicalAnd LogicalNot
LogicalOr LookupTableFindV2 LookupTableSizeV2 LRN LRNGrad MatMul MatrixBandPart MatrixDiag
MatrixDiagPartV3 MatrixDiagV3 MatrixSetDiagV3 Max MaxPool MaxPool3D MaxPoolGrad MaxPoolGradV2
MaxPoolV2 Maximum Mean Merge Min Minimum MirrorPad Mod Mul MulNoNan Multinomial Ndtri Neg
NextIteration NoOp NonMaxSuppressionV3 NotEqual OneHot OnesLike Pack Pad PadV2 ParallelConcat
PartitionedCall Placeholder PlaceholderWithDefault Pow PreventGradient Prod Qr RandomGamma
RandomShuffle RandomStandardNormal RandomUniform RandomUniformInt Range Rank ReadVariableOp
Real RealDiv Reciprocal ReciprocalGrad Relu Relu6 Relu6Grad ReluGrad Reshape
ResizeBilinear ResizeNearestNeighbor ResourceApplyAdam ResourceApplyGradientDescent
ResourceGather ResourceScatterAdd ResourceScatterUpdate ResourceStridedSliceAssign Reverse
ReverseSequence ReverseV2 RightShift Rint Round Rsqrt RsqrtGrad ScatterNd Select SelectV2
Selu SeluGrad Shape ShapeN Sigmoid SigmoidGrad Sign Sin Sinh Size Slice Snapshot Softmax
SoftmaxCrossEntropyWithLogits Softplus SoftplusGrad Softsign SpaceToBatchND SpaceToDepth
SparseSoftmaxCrossEntropyWithLogits SparseToDense Split SplitV Sqrt SqrtGrad Square
SquaredDifference Squeeze StatefulPartitionedCall StatelessIf StatelessRandomNormalV2
StatelessRandomUniformV2 StatelessRandomGetKeyCounter StatelessTruncatedNormalV2
StatelessWhile StopGradient StridedSlice StridedSliceGrad Sub Sum Switch Tan Tanh TanhGrad
TensorListFromTensor TensorListGetItem TensorListLength TensorListReserve TensorListSetItem
TensorListStack TensorScatterAdd TensorScatterUpdate Tile TopKV2 Transpose TruncateDiv
TruncatedNormal Unique Unpack UnsortedSegmentMax UnsortedSegmentSum VarHandleOp
VarIsInitializedOp VariableShape Where While Xdivy Xlog1py Xlogy ZerosLike
""".split()) | frozenset("""
CudnnRNNBackpropV3 CudnnRNNV3 DenseBincount IteratorGetNext LookupTableExportV2
LookupTableImportV2 LookupTableInsertV2 MutableHashTableV2 RaggedTensorToTensor
StaticRegexReplace StringLower StringSplitV2 UniqueWithCounts
""".split())
# The second set: what model=text's SavedModels use (measured, both generations): string ops,
# an in-memory lookup table (its vocabulary travels in the checkpoint as tensors, through
# LookupTableExportV2/ImportV2: no file of its own), tf_keras' cuDNN LSTM kernels, and its
# adapt step's IteratorGetNext (which only reads an iterator it is handed: the dataset ops
# that would read files are checked on their own).
# The checkpoint ops of a SavedModel's own saver functions (its saver_def's save and restore).
SAVER_OPS = frozenset("""
MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename StaticRegexFullMatch StringJoin
""".split())


@dataclass(frozen=True)
class Finding:
    """One construct that would run code it carries, and where it is."""

    what: str  # "Lambda layer 'double'", "op WriteFile"
    where: str  # the file, and the function or config path

    def __str__(self) -> str:
        return f"{self.what} ({self.where})"


def python_in_config(config: Any, where: str, path: str = "") -> Iterator[Finding]:
    """Python a Keras config carries: Lambda layers and functions serialized as code."""
    if isinstance(config, Mapping):
        if config.get("class_name") == "Lambda":
            name = (config.get("config") or {}).get("name") or path
            yield Finding(f"Lambda layer '{name}' (Python bytecode, run when it is loaded and "
                          "called)", f"{where} {path or 'config'}")
            return  # its function is the finding
        if config.get("class_name") == "__lambda__" or config.get("function_type") == "lambda":
            yield Finding("a Python function serialized as bytecode", f"{where} {path}")
            return
        for key, value in config.items():
            yield from python_in_config(value, where, f"{path}.{key}" if path else str(key))
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            yield from python_in_config(value, where, f"{path}[{i}]")


def ops_outside(functions: Mapping[str, Iterable[str]], saver_functions: Iterable[str],
                where: str) -> list[Finding]:
    """The ops of a SavedModel's graph (function name -> its ops; "" for the graph's own nodes)
    that are not known to only compute; the saver's checkpoint ops allowed in its functions."""
    saver = set(saver_functions)
    found: dict[str, list[str]] = {}
    for function, ops in functions.items():
        allowed = COMPUTE_OPS | (SAVER_OPS if function in saver else set())
        for op in ops:
            if op not in allowed:
                found.setdefault(op, []).append(function or "the graph")
    return [Finding(f"op {op} (not known to only compute: it may touch files, processes or "
                    "the network)", f"{where}, in {', '.join(sorted(set(places))[:3])}")
            for op, places in sorted(found.items())]


class UntrustedArtifact(ValueError):
    """A saved model carrying what would run code on this machine, refused before loading."""


def refusal(findings: list[Finding], path: object) -> UntrustedArtifact:
    shown = "; ".join(map(str, findings[:5])) + (
        f"; and {len(findings) - 5} more" if len(findings) > 5 else "")
    return UntrustedArtifact(
        f"{path} was not loaded: it carries what could run code on this machine: {shown}. "
        f"{TRUST_KEY}=true loads it anyway, running that code: only for a model from a source "
        "you trust")
