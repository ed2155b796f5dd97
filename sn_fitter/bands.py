"""Map filter names as portals send them to sncosmo bandpass names.

SkyPortal sends sncosmo names already ("ztfg", "sdssr", "bessellb"); other portals and
alert streams use "ZTF_g", "g" with instrument "ZTF", "B", "ATLAS_o", ... . Names that are
already sncosmo names pass through unchanged.
"""

from __future__ import annotations

import re

# Instrument (normalized) -> prefix of its sncosmo bandpasses, with the letters it has.
INSTRUMENT_BANDS: dict[str, tuple[str, str]] = {
    "ztf": ("ztf", "gri"),
    "sdss": ("sdss", "ugriz"),
    "atlas": ("atlas", "co"),
    "decam": ("des", "grizy"),
    "lsst": ("lsst", "ugrizy"),
    "ps1": ("ps1::", "grizy"),
    "panstarrs": ("ps1::", "grizy"),
    "2mass": ("2mass", "jhs"),
}
# Johnson/Cousins capital letters; "U" is sncosmo's "bessellux".
BESSELL = {"U": "bessellux", "B": "bessellb", "V": "bessellv", "R": "bessellr", "I": "besselli"}
ALIASES = {"ztfg": "ztfg", "ztfr": "ztfr", "ztfi": "ztfi", "2massks": "2massks"}


def _normalize(text: str) -> str:
    return re.sub(r"[\s_\-:./]+", "", text.strip().lower())


def _instrument_key(instrument: str | None) -> str | None:
    if not instrument:
        return None
    norm = _normalize(instrument)
    for key in INSTRUMENT_BANDS:
        if key in norm:
            return key
    return None


def sncosmo_band_name(filter_name: str, instrument: str | None = None) -> str:
    """The sncosmo bandpass name for a portal filter name (not checked against the registry)."""
    raw = filter_name.strip()
    if raw in BESSELL:
        return BESSELL[raw]
    norm = _normalize(raw)
    if norm in ALIASES:
        return ALIASES[norm]
    for key, (prefix, letters) in INSTRUMENT_BANDS.items():
        # "ZTF_g", "ztf-g", "sdss_r", "atlas_o": instrument prefix then one letter.
        if norm.startswith(key) and len(norm) == len(key) + 1 and norm[-1] in letters:
            return f"{prefix}{norm[-1]}"
    if len(norm) == 1:
        known = _instrument_key(instrument)
        if known is not None and norm in INSTRUMENT_BANDS[known][1]:
            return f"{INSTRUMENT_BANDS[known][0]}{norm}"
        if norm in "ugriz":
            return f"sdss{norm}"  # a bare lowercase ugriz letter: the SDSS system
    if norm.startswith("bessell") and norm[7:] in {"u", "ux", "b", "v", "r", "i"}:
        return "bessellux" if norm[7:] in {"u", "ux"} else norm
    return raw  # assume it is already an sncosmo name (custom or registered)
