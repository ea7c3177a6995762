# Sourced by demo.sh and test.sh: create .venv once and install the project (with extras "$1" if given).
# Touches the network only when something is needed: pip is upgraded once, when the venv is made, and the
# project is (re)installed only when pyproject.toml changed since the last install with these extras (the
# install is editable, so source changes need none).
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
fi
_stamp=".venv/.installed${1:+-$1}"
_want=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
if [ ! -x .venv/bin/bottleneck ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  # Before its rename this project was installed as "bottleneck"; drop that registration (editable: only its
  # metadata and path hook go) so that nothing mistakes it for the numerical Bottleneck.
  _old=$(.venv/bin/python -m pip show bottleneck 2>/dev/null || true)
  case "$_old" in
    *"Summary: Transfer learning on images"*) .venv/bin/python -m pip uninstall -y -q bottleneck >/dev/null ;;
  esac
  # ... and the metadata folder that install left in the checkout (on sys.path whenever Python runs from here).
  if grep -qs "^Summary: Transfer learning on images" bottleneck.egg-info/PKG-INFO; then rm -rf bottleneck.egg-info; fi
  .venv/bin/python -m pip install -q -e ".${1:+[$1]}"
  echo "$_want" >"$_stamp"
fi
