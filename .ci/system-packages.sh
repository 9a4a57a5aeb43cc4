# Sourced by .ci/run with the CI venv active (bash, set -euo pipefail): the system packages that
# tests/test_io_gstreamer.py and tests/test_io_rtsp.py run for real, and GStreamer's Python binding
# made importable in the venv.
#
# * Debian's packages: GStreamer 1.x with the base/good/bad/libav plugins and gst-launch (tools),
#   the introspection data gi reads (Gst, GstApp, GstVideo, GstRtspServer), the RTSP server library
#   and python3-gi. Installed with apt-get only when one is missing, so a second run takes
#   well under a second.
# * The binding: python3-gi is built for Debian's /usr/bin/python3; the venv's CPython (pyenv) is
#   another build of the same version (same ABI tag). Rather than expose all of Debian's
#   dist-packages (a second numpy, cryptography, ...), the venv gets a folder holding one symlink,
#   gi -> /usr/lib/python3/dist-packages/gi, named by a .pth file in its site-packages. PyGObject
#   cannot be pip-built here instead: 3.52+ needs girepository-2.0, which Debian 12 lacks.
#   On a Jetson none of this is needed: gi comes with the system Python
#   (python3 -m venv --system-site-packages).
# * MRFS_REQUIRE_GSTREAMER=1: in CI a missing binding or plugin FAILS the GStreamer tests instead
#   of skipping them (outside CI they skip, naming what is missing).

mrfs_gst_packages="gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp python3-gi"
mrfs_gst_missing=""
for mrfs_gst_package in $mrfs_gst_packages; do
  # No pipe into grep -q: under pipefail an early-exiting grep could fail an installed package.
  case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$mrfs_gst_package" 2>/dev/null || true)" in
    ii*) ;;
    *) mrfs_gst_missing="$mrfs_gst_missing $mrfs_gst_package" ;;
  esac
done
if [ -n "$mrfs_gst_missing" ]; then
  echo "== system packages: installing$mrfs_gst_missing"
  mrfs_gst_sudo=""
  [ "$(id -u)" -eq 0 ] || mrfs_gst_sudo="sudo"
  $mrfs_gst_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  $mrfs_gst_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $mrfs_gst_missing
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  echo ".ci/system-packages.sh: activate the venv first (it links GStreamer's binding into the active venv)" >&2
  return 1
fi
if ! python -c "import gi" 2>/dev/null; then
  mrfs_gst_debian=/usr/lib/python3/dist-packages/gi
  mrfs_gst_suffix=$(python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  if ! ls "$mrfs_gst_debian"/_gi"$mrfs_gst_suffix" >/dev/null 2>&1; then
    echo ".ci/system-packages.sh: Debian's python3-gi has no _gi$mrfs_gst_suffix for this venv's Python" \
      "($(python -V 2>&1)); it was built for $(/usr/bin/python3 -V 2>&1)" >&2
    return 1
  fi
  mkdir -p "$VIRTUAL_ENV/system-gi"
  ln -sfn "$mrfs_gst_debian" "$VIRTUAL_ENV/system-gi/gi"
  echo "$VIRTUAL_ENV/system-gi" > "$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/mrfs-system-gi.pth"
fi
python - <<'PY'
import gi

for name in ("Gst", "GstApp", "GstVideo", "GstRtspServer"):
    gi.require_version(name, "1.0")
from gi.repository import Gst, GstApp, GstRtspServer, GstVideo  # noqa: F401 - importable is the check

Gst.init(None)
missing = [e for e in ("videotestsrc", "appsink", "videoconvert", "jpegenc", "rtpjpegpay", "rtspsrc", "decodebin",
                       "avenc_ffv1", "matroskamux") if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit(f".ci/system-packages.sh: GStreamer elements missing after the install: {', '.join(missing)}")
print(f"== {Gst.version_string()} and PyGObject {gi.__version__} in {__import__('sys').prefix}")
PY
export MRFS_REQUIRE_GSTREAMER=1
unset mrfs_gst_packages mrfs_gst_missing mrfs_gst_package mrfs_gst_sudo mrfs_gst_debian mrfs_gst_suffix
