# Sourced by tools/bench/gpu*.sh: makes Vulkan's loader, the NVIDIA driver,
# diffusers and a petal binary ($PETAL) available without downloading
# anything (see tools/bench/gpu.sh for where each comes from).
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  if compgen -G ".gl/*.deb" > /dev/null; then
    echo "no Vulkan loader on this machine: unpacking .gl/*.deb"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    echo "no Vulkan loader (libvulkan.so.1) and no .gl/*.deb to unpack" >&2
    exit 1
  fi
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] \
   && ! ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json > /dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

if ! python3 -c 'import diffusers' 2> /dev/null; then
  echo "diffusers is not installed: installing the wheels in .whl/"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/petal-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/petal-site${PYTHONPATH:+:$PYTHONPATH}
fi

if [ -n "${PETAL:-}" ]; then
  :
elif command -v cargo > /dev/null; then
  cargo build --release --locked --quiet || exit 1
  PETAL=target/release/petal
else
  PETAL=.devbin/petal
fi
[ -x "$PETAL" ] || { echo "no petal binary at $PETAL" >&2; exit 1; }

