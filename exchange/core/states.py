"""US states, the District of Columbia and the territories: their two-letter codes and
names, and the lookup that turns what a seller sends (a code in any case, or a full name
however spaced, dotted and cased) into the code. Leads store the code."""

from __future__ import annotations

from collections.abc import Mapping

STATE_NAMES: Mapping[str, str] = {
    "AL": "Alabama",
    "AK": "Alaska",
    "AZ": "Arizona",
    "AR": "Arkansas",
    "CA": "California",
    "CO": "Colorado",
    "CT": "Connecticut",
    "DE": "Delaware",
    "FL": "Florida",
    "GA": "Georgia",
    "HI": "Hawaii",
    "ID": "Idaho",
    "IL": "Illinois",
    "IN": "Indiana",
    "IA": "Iowa",
    "KS": "Kansas",
    "KY": "Kentucky",
    "LA": "Louisiana",
    "ME": "Maine",
    "MD": "Maryland",
    "MA": "Massachusetts",
    "MI": "Michigan",
    "MN": "Minnesota",
    "MS": "Mississippi",
    "MO": "Missouri",
    "MT": "Montana",
    "NE": "Nebraska",
    "NV": "Nevada",
    "NH": "New Hampshire",
    "NJ": "New Jersey",
    "NM": "New Mexico",
    "NY": "New York",
    "NC": "North Carolina",
    "ND": "North Dakota",
    "OH": "Ohio",
    "OK": "Oklahoma",
    "OR": "Oregon",
    "PA": "Pennsylvania",
    "RI": "Rhode Island",
    "SC": "South Carolina",
    "SD": "South Dakota",
    "TN": "Tennessee",
    "TX": "Texas",
    "UT": "Utah",
    "VT": "Vermont",
    "VA": "Virginia",
    "WA": "Washington",
    "WV": "West Virginia",
    "WI": "Wisconsin",
    "WY": "Wyoming",
    "DC": "District of Columbia",
    "AS": "American Samoa",
    "GU": "Guam",
    "MP": "Northern Mariana Islands",
    "PR": "Puerto Rico",
    "VI": "U.S. Virgin Islands",
    "UM": "United States Minor Outlying Islands",
}

US_STATE_CODES: frozenset[str] = frozenset(STATE_NAMES)


def _state_key(text: str) -> str:
    """A full name folded for lookup: case, runs of spaces and dots do not matter."""
    return " ".join(text.replace(".", " ").casefold().split())


_STATE_BY_NAME: Mapping[str, str] = {
    **{_state_key(name): code for code, name in STATE_NAMES.items()},
    _state_key("Virgin Islands"): "VI",
    _state_key("US Virgin Islands"): "VI",
    _state_key("Washington DC"): "DC",
}


def state_code(text: str) -> str | None:
    """The code a stripped, non-blank ``text`` names (a code in any case, or a full
    name), or None when it names none."""
    if len(text) == 2:
        code = text.upper()
        return code if code in US_STATE_CODES else None
    return _STATE_BY_NAME.get(_state_key(text))
