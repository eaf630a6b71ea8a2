#!/usr/bin/env bash
# Regenerates client/protos/inference_pb2.py and inference_pb2_grpc.py from
# client/protos/inference.proto.
#
# grpcio-tools is pinned and installed into a throwaway virtualenv: the protoc it bundles
# decides the oldest protobuf runtime the generated code accepts (1.64.3 bundles protoc
# 26.1, i.e. protobuf 5.26.1 gencode, the same as KServe 0.21 ships), and the project's
# own environment keeps its protobuf untouched.
#
# Two edits follow generation:
#  - the messages live in a private descriptor pool, so the client can be imported in a
#    process that also loads KServe's copy of the same `inference` package (the test
#    suite does; the default pool would refuse the duplicate symbols);
#  - the grpc module imports its sibling relatively, as a package module must.
set -euo pipefail

GRPCIO_TOOLS_VERSION="${GRPCIO_TOOLS_VERSION:-1.64.3}"
PYTHON="${PYTHON:-python3}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
protos="${root}/client/protos"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

"${PYTHON}" -m venv "${work}/venv"
"${work}/venv/bin/pip" install --quiet --disable-pip-version-check \
  "grpcio-tools==${GRPCIO_TOOLS_VERSION}"

mkdir "${work}/out"
"${work}/venv/bin/python" -m grpc_tools.protoc \
  --proto_path="${protos}" \
  --python_out="${work}/out" \
  --grpc_python_out="${work}/out" \
  "${protos}/inference.proto"

pb2="${work}/out/inference_pb2.py"
pb2_grpc="${work}/out/inference_pb2_grpc.py"
note="# Edited by scripts/gen-protos.sh: private descriptor pool, relative import."

grep -q '^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(' "${pb2}"
sed -i \
  -e 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(/' \
  -e "2a ${note}" \
  "${pb2}"

grep -q '^import inference_pb2 as inference__pb2$' "${pb2_grpc}"
sed -i \
  -e 's/^import inference_pb2 as inference__pb2$/from . import inference_pb2 as inference__pb2/' \
  -e "1a ${note}" \
  "${pb2_grpc}"

cp "${pb2}" "${pb2_grpc}" "${protos}/"
echo "generated ${protos}/inference_pb2.py and inference_pb2_grpc.py" \
  "with grpcio-tools ${GRPCIO_TOOLS_VERSION}"
