"""One form control per config field, derived from the dataclass field's type and metadata.

A control turns the field's value into what a widget shows and back, and checks the field's
own limits (``min``/``max``/``choices`` from the metadata). Checks that involve several
fields stay with the config object itself; the form asks it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

import ipywidgets as widgets
import traitlets

# The "?" beside each field: a small outlined button, styled through the widget itself (no stylesheet needed);
# hovering it shows the help as a tooltip, clicking it shows (and hides) the help under the field.
HELP_BUTTON_LAYOUT = dict(width="22px", height="22px", padding="0", margin="0 0 0 6px", border="1.5px solid #1565c0")
HELP_BUTTON_STYLE = dict(button_color="white", text_color="#1565c0", font_weight="bold")
# Specific enough (and :focus too) to win over the notebook's own focus ring on the box being typed in.
INVALID_STYLE = ("<style>" + ",".join(f".nbtools-field .nbtools-invalid {tag}{state}" for tag in ("input", "select", "textarea")
                                      for state in ("", ":focus"))
                 + "{outline:2px solid #c62828 !important;outline-offset:-1px;background:#fff5f5 !important}</style>")
LABEL_WIDTH = "230px"   # wide enough for the longest field name (gradient_accumulation_steps) unclipped
CONTROL_WIDTH = "330px"
PATH_WIDTH = "720px"    # file and folder fields: an absolute path of ~100 characters shows whole


class FieldValueError(ValueError):
    """A value typed into one field that cannot be used; says why and how to fix it."""

    def __init__(self, field_name: str, reason: str, fix: str):
        self.field = field_name
        self.reason = reason
        self.fix = fix
        super().__init__(f"{field_name}: {reason} (fix: {fix})")


@dataclass(frozen=True)
class FieldSpec:
    """What the form needs to know about one dataclass field."""

    name: str
    base: Any                 # int, float, str, bool, list[...] or a Union of str and list
    optional: bool            # None allowed (shown as an empty box)
    help: str
    group: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: tuple = ()
    multiple: bool = False
    usual: str = ""           # the range most runs use, e.g. "1e-6 to 1e-4 with LoRA" (advice, not a limit)
    path: bool = False        # a file or folder (metadata kind='path'): a wider box

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.base) is list or self.multiple

    @property
    def is_str_or_list(self) -> bool:
        args = typing.get_args(self.base)
        return typing.get_origin(self.base) is typing.Union and str in args

    @property
    def item_type(self) -> Any:
        args = typing.get_args(self.base)
        if typing.get_origin(self.base) is list and args:
            return args[0]
        return str

    def tooltip(self) -> str:
        limits = []
        if self.choices:
            limits.append(("any of " if self.is_list else "one of ") + ", ".join(self.choices))
        if self.minimum is not None:
            limits.append(f"min {self.minimum}")
        if self.maximum is not None:
            limits.append(f"max {self.maximum}")
        if self.usual:
            limits.append(f"usual: {self.usual}")
        if self.optional:
            limits.append("empty = default")
        if self.is_list or self.is_str_or_list:
            limits.append("lists: a, b" if self.is_list else "lists: [a, b]")
        return self.help + (f" [{'; '.join(limits)}]" if limits else "")


def field_specs(config_class) -> list[FieldSpec]:
    """The specs of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_class)
    specs = []
    for f in dataclasses.fields(config_class):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = hint
        if optional:
            rest = tuple(a for a in args if a is not type(None))
            base = rest[0] if len(rest) == 1 else typing.Union[rest]
        meta = f.metadata
        specs.append(FieldSpec(
            name=f.name, base=base, optional=optional, help=meta.get("help", ""), group=meta.get("group", ""),
            minimum=meta.get("min"), maximum=meta.get("max"), choices=tuple(meta.get("choices", ())),
            multiple=bool(meta.get("multiple", False)), usual=str(meta.get("usual", "")),
            path=meta.get("kind") == "path",
        ))
    return specs


class FieldText(widgets.Text):
    """A text box that also takes a number from Python (``control.value = 2.0`` shows "2.0")."""

    value = traitlets.CUnicode("", help="String value").tag(sync=True)


class FieldControl:
    """One row of the form: the field's name, its input, and the inline message shown when the value is wrong.

    The name is a separate label, not the widget's ``description``: ipywidgets 8 puts a widget's
    tooltip on its description label only, so with a description the input itself (text boxes,
    dropdowns, checkboxes) shows no help on hover. Here the help is the input's own tooltip, the
    label's tooltip, and a "?" button beside the input that also shows it under the row when clicked
    (a tooltip alone cannot be read on a touch screen, and disappears while one reads it).
    """

    def __init__(self, spec: FieldSpec, value: Any):
        self.spec = spec
        help_text = spec.tooltip()
        self.label = widgets.HTML(
            value=f'<span class="nbtools-field-name" title="{_escape_attr(help_text)}">{_escape(spec.name)}</span>',
            layout=widgets.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH),
        )
        self.label.add_class("nbtools-field-label")
        self.control = self._make_control(spec, help_text)
        self.help_button = widgets.Button(description="?", tooltip=help_text,
                                          layout=widgets.Layout(**HELP_BUTTON_LAYOUT), style=HELP_BUTTON_STYLE)
        self.help_button.add_class("nbtools-help")
        self.help_button.on_click(self.toggle_help)
        self.help_note = widgets.HTML(value=f'<span style="color:#374151">{_escape(help_text)}</span>',
                                      layout=widgets.Layout(display="none", margin=f"0 0 0 {LABEL_WIDTH}"))
        self.help_note.add_class("nbtools-field-help")
        self.rule = widgets.HTML(value="")  # holds the red outline's style rule while the value is wrong
        self.rule.add_class("nbtools-field-rule")
        self.message = widgets.HTML(value="", layout=widgets.Layout(display="none", margin=f"0 0 0 {LABEL_WIDTH}"))
        self.message.add_class("nbtools-field-error")
        self.row = widgets.HBox([self.label, self.control, self.help_button, self.rule],
                                layout=widgets.Layout(align_items="center"))
        self.row.add_class("nbtools-field")
        self.row.add_class(f"nbtools-field-{spec.name}")
        self.box = widgets.VBox([self.row, self.help_note, self.message])
        self.set(value)

    # --- building ----------------------------------------------------------------------------
    @staticmethod
    def _make_control(spec: FieldSpec, help_text: str = "") -> widgets.DOMWidget:
        # No description: the tooltip then lands on the input element itself (see the class docstring).
        common = dict(tooltip=help_text or spec.tooltip(),
                      layout=widgets.Layout(width=PATH_WIDTH if spec.path else CONTROL_WIDTH, max_width="100%"))
        if spec.base is bool:
            return widgets.Checkbox(indent=False, **common)
        if spec.choices and not spec.is_list and not spec.optional:
            return widgets.Dropdown(options=list(spec.choices), **common)
        # Numbers are typed into text boxes and parsed here: ipywidgets' IntText/FloatText put their
        # tooltip on the description label only, never on the input, so their help could not be hovered.
        placeholder = "empty = default" if spec.optional else ""
        return FieldText(placeholder=placeholder, continuous_update=False, **common)

    # --- value <-> widget ----------------------------------------------------------------------
    def set(self, value: Any) -> None:
        """Show a config value."""
        self.control.value = self.format(value)

    def format(self, value: Any) -> Any:
        spec = self.spec
        if isinstance(self.control, (widgets.Checkbox, widgets.Dropdown)):
            return value
        if value is None:
            return ""
        if isinstance(value, (list, tuple)):
            inner = ", ".join(_scalar_text(v) for v in value)
            # A one-item list of a str-or-list field must not read back as a plain string (a regex).
            return f"[{inner}]" if spec.is_str_or_list else inner
        return _scalar_text(value)

    def parse(self) -> Any:
        """The field's value from the widget; raises FieldValueError with a fix when it is not usable."""
        spec = self.spec
        raw = self.control.value
        if isinstance(self.control, (widgets.Checkbox, widgets.Dropdown)):
            value = raw
        else:
            text = raw.strip()
            if text == "":
                if spec.optional:
                    return None
                if spec.base is str:
                    value = ""
                else:
                    raise FieldValueError(spec.name, "is empty", f"give {spec.name} a value")
            elif spec.is_list:
                value = [self._item(v) for v in _split_list(text)]
                if not value:
                    raise FieldValueError(spec.name, "the list is empty", f"give at least one value for {spec.name}")
            elif spec.is_str_or_list and text.startswith("[") and text.endswith("]"):
                value = [v for v in _split_list(text)]
            elif spec.base in (int, float):
                value = _number(spec.name, text, spec.base)
            else:
                value = text
        self._check_limits(value)
        return value

    def _item(self, text: str) -> Any:
        if self.spec.item_type in (int, float):
            return _number(self.spec.name, text, self.spec.item_type)
        return text

    def _check_limits(self, value: Any) -> None:
        spec = self.spec
        for v in (value if isinstance(value, list) else [value]):
            if spec.choices and isinstance(v, str) and v not in spec.choices:
                raise FieldValueError(spec.name, f"{v!r} is not one of {', '.join(spec.choices)}",
                                      f"use one of: {', '.join(spec.choices)}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if spec.minimum is not None and v < spec.minimum:
                    raise FieldValueError(spec.name, f"{v} is below the minimum {_number_text(spec.minimum)}",
                                          self._range_fix(f"{_number_text(spec.minimum)} or more"))
                if spec.maximum is not None and v > spec.maximum:
                    raise FieldValueError(spec.name, f"{v} is above the maximum {_number_text(spec.maximum)}",
                                          self._range_fix(f"{_number_text(spec.maximum)} or less"))

    def _range_fix(self, allowed: str) -> str:
        """Advice a user can follow: the usual range where the config names one, else the limit."""
        if self.spec.usual:
            return f"most runs use {self.spec.name} {self.spec.usual}"
        return f"set {self.spec.name} to {allowed}"

    # --- help and inline message ----------------------------------------------------------------
    def toggle_help(self, button=None) -> None:
        """The "?" was clicked: show the help under the field, or hide it again."""
        shown = self.help_note.layout.display != "none"
        self.help_note.layout.display = "none" if shown else ""

    def show_error(self, reason: Optional[str], fix: Optional[str] = None) -> None:
        if not reason:
            self.message.value = ""
            self.message.layout.display = "none"
            self.control.remove_class("nbtools-invalid")
            self.rule.value = ""
            return
        # The red outline's rule travels with the field that needs it, so any form built from these
        # controls shows it (no stylesheet of the form's own required).
        self.rule.value = INVALID_STYLE
        fix_text = f" <i>Fix: {_escape(fix)}</i>" if fix else ""
        self.message.value = f'<span style="color:#c62828">&#9888; {_escape(reason)}.{fix_text}</span>'
        self.message.layout.display = ""
        self.control.add_class("nbtools-invalid")

    @property
    def error(self) -> str:
        return self.message.value


def _scalar_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _split_list(text: str) -> list[str]:
    """'a, b', '[a, b]' or a YAML flow list -> items as text."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    return [item.strip().strip("'\"") for item in inner.split(",") if item.strip()]


def _number(name: str, text: str, kind: type) -> Any:
    try:
        number = float(text)
    except ValueError:
        number = None
    if kind is float and number is not None:
        return number
    if kind is int and number is not None and number.is_integer():
        return int(number)
    what = "number" if kind is float else "whole number"
    raise FieldValueError(name, f"{text!r} is not a {what}", f"write a {what}, e.g. {name}: {1 if kind is int else 0.1}")


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return _escape(text).replace('"', "&quot;")


def _number_text(value: float) -> str:
    """1e-09 -> 1e-9, 1.0 -> 1: limits as a person writes them."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e+")
