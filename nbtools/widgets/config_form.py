"""The run-config form: a thin ipywidgets view over ``RunConfig``.

Every control is derived from a dataclass field (type, help, limits), so a knob added to
the config appears here without touching this file. The form never holds settings of its
own: ``form_from_config`` shows a config, ``config_from_form`` reads one back (validated by
the config itself), and the handlers are plain methods, so tests drive the form by setting
widget values and clicking buttons in Python, no browser needed.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Callable, Optional, Union

import ipywidgets as widgets

from nbtools.config import LOSS_PRESETS, ConfigError, RunConfig, preset_matches, preset_values
from nbtools.errors import UserError
from nbtools.widgets.estimate_view import DEFAULT_GPU_GIB, GPU_SIZES, estimate_html, pair_count, run_length_note
from nbtools.widgets.fields import LABEL_WIDTH, PATH_WIDTH, FieldControl, FieldValueError, field_specs
from nbtools.widgets.notebook import HTMLView, config_table

# The fields users reach for first, in the order they think about them.
BASIC_FIELDS = ("model", "custom_model_name", "task_display_name", "epoch", "batch_size", "learning_rate",
                "lora_rank")
# Where the data comes from and where the run goes.
DATA_FIELDS = ("train_file", "validation_file", "validation_split", "output_dir", "max_steps", "seed")
# Everything else is Advanced, under the config's own group names, in this order.
ADVANCED_GROUPS = (
    ("data", "Sequence length and images"),
    ("video", "Videos"),
    ("training", "Optimisation"),
    ("lora", "LoRA"),
    ("dpo", "DPO loss"),
    ("evaluation", "Evaluation and checkpoints"),
    ("memory", "Memory and precision"),
    ("output", "Names"),
    ("model", "Model"),
)

# The form's own look, shipped with it (no JupyterLab extension: Colab renders it the same way).
# (each field carries its own help mark and red-outline rule: see nbtools.widgets.fields)
FORM_STYLE = """<style>
.nbtools-config-form .nbtools-field-name { overflow-wrap: anywhere; line-height: 1.2; cursor: help; }
.nbtools-config-form .nbtools-save-status { min-height: 1.5em; }
</style>"""

Estimator = Callable[[RunConfig, Optional[float]], str]  # (config, GPU memory in GiB or None) -> HTML
StyleCheck = Callable[[RunConfig], Optional[str]]  # config -> a warning about its answers and model, or None


def answers_style_check(config: RunConfig) -> Optional[str]:
    """Do the training file's chosen answers suit the model (Instruct: no <think> blocks; Thinking: reasoning kept)?"""
    from nbtools.data.answer_style import answers_style_warning

    return answers_style_warning(config.model, config.train_file, config.columns)


class ConfigForm(widgets.VBox):
    """Basic / Data / Advanced sections, the live estimate, and a Save button for the YAML."""

    def __init__(self, config: RunConfig, save_path: Union[str, Path, None] = None,
                 estimator: Optional[Estimator] = None, style_check: Optional[StyleCheck] = None):
        self.config_class = type(config)
        self.estimator = estimator or estimate_html
        self.style_check = style_check or answers_style_check
        self._style_checked_for: Optional[tuple] = None
        self.fields: dict[str, FieldControl] = {
            spec.name: FieldControl(spec, getattr(config, spec.name)) for spec in field_specs(self.config_class)
        }
        # the chosen loss preset's one line of help, under its dropdown
        self.preset_note = widgets.HTML(value="", layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}"))
        self.preset_note.add_class("nbtools-preset-note")
        if "loss_preset" in self.fields:
            box = self.fields["loss_preset"].box
            box.children = tuple(box.children) + (self.preset_note,)
        # what decides the run's length (max_steps overrides epoch), under both fields: one is in Basic,
        # the other in "Data and run", and a change to the ignored one must visibly do nothing
        self.length_notes = {}
        for name in ("epoch", "max_steps"):
            if name in self.fields:
                note = widgets.HTML(value="", layout=widgets.Layout(margin=f"0 0 0 {LABEL_WIDTH}"))
                note.add_class("nbtools-length-note")
                box = self.fields[name].box
                box.children = tuple(box.children) + (note,)
                self.length_notes[name] = note
        self.form_error = widgets.HTML(value="")
        self.form_error.add_class("nbtools-form-error")
        self.style_note = widgets.HTML(value="")  # the answers' style against the model, when they do not match
        self.style_note.add_class("nbtools-style-note")
        self.estimate = widgets.HTML(value="")
        self.estimate.add_class("nbtools-estimate")
        # Not a config setting: the GPU the estimate is checked against (advice names the knob to turn).
        self.gpu = widgets.Dropdown(options=GPU_SIZES, value=DEFAULT_GPU_GIB,
                                    tooltip="GPU memory the estimate is checked against",
                                    layout=widgets.Layout(width="330px"))
        self.gpu.add_class("nbtools-gpu")
        self.save_path = widgets.Text(
            value=str(save_path or "config.yaml"),
            tooltip="Where Save writes the config YAML (03_train.ipynb reads it as config_file).",
            layout=widgets.Layout(width=PATH_WIDTH, max_width="100%"),
        )
        self.save_button = widgets.Button(description="Save", button_style="primary", icon="save",
                                          tooltip="Write the config YAML")
        self._saves = 0
        self.save_button.add_class("nbtools-save")
        self.save_button.on_click(self.on_save_clicked)
        self.status = widgets.HTML(value="")
        self.status.add_class("nbtools-save-status")
        self._config: Optional[RunConfig] = None
        self._loading = False
        self._estimated_for: Optional[dict] = None

        self.sections = widgets.Accordion(children=self._sections(), titles=("Basic", "Data and run", "Advanced"))
        self.sections.selected_index = 0
        super().__init__([
            widgets.HTML(FORM_STYLE), self.sections, self.form_error, self.style_note,
            _labelled("estimate for", self.gpu), self.estimate, _labelled("save to", self.save_path, self.save_button),
            self.status,
        ])
        self.add_class("nbtools-config-form")
        for control in self.fields.values():
            control.control.observe(self.on_field_changed, names="value")
        self.gpu.observe(self.on_field_changed, names="value")
        self.refresh()

    # --- layout --------------------------------------------------------------------------------
    def _sections(self) -> list[widgets.Widget]:
        basic = [self.fields[n].box for n in BASIC_FIELDS if n in self.fields]
        data = [self.fields[n].box for n in DATA_FIELDS if n in self.fields]
        placed = set(BASIC_FIELDS) | set(DATA_FIELDS)
        advanced: list[widgets.Widget] = []
        known_groups = [g for g, _ in ADVANCED_GROUPS]
        rest = [name for name in self.fields if name not in placed]
        groups = list(ADVANCED_GROUPS) + sorted(
            {(self.fields[n].spec.group, self.fields[n].spec.group.title()) for n in rest
             if self.fields[n].spec.group not in known_groups})
        for group, title in groups:
            names = [n for n in rest if self.fields[n].spec.group == group]
            if names:
                advanced.append(widgets.HTML(f"<b>{html.escape(title)}</b>"))
                advanced.extend(self.fields[n].box for n in names)
        return [widgets.VBox(basic), widgets.VBox(data), widgets.VBox(advanced)]

    # --- reading and validating ------------------------------------------------------------
    def values(self) -> dict:
        """The parsed value of every field; raises FieldValueError at the first unusable one."""
        return {name: control.parse() for name, control in self.fields.items()}

    def refresh(self) -> Optional[RunConfig]:
        """Check every field, show the messages inline, update the estimate; return the config or None."""
        values, bad = {}, False
        for name, control in self.fields.items():
            try:
                values[name] = control.parse()
                control.show_error(None)
            except FieldValueError as exc:
                control.show_error(exc.reason, exc.fix)
                bad = True
        self.form_error.value = ""
        self._show_preset_note()
        config = None
        if not bad:
            try:
                config = self.config_class.from_dict(values)
            except ConfigError as exc:  # a rule over several fields: show it at the field it names
                target = self.fields.get(exc.field)
                if target is not None:
                    target.show_error(exc.reason, exc.fix)
                self.form_error.value = f'<span style="color:#c62828">&#9888; {html.escape(str(exc))}</span>'
        self._config = config
        self.save_button.disabled = config is None
        self._show_length(config)
        if config is None:
            self.estimate.value = "<i>Estimate: fix the fields marked in red first.</i>"
            self._estimated_for = None  # the next valid config is estimated again, even if unchanged
        else:
            self._update_style_note(config)
            self._update_estimate(config)
        return config

    def _show_length(self, config: Optional[RunConfig]) -> None:
        text = run_length_note(config, pair_count(config)) if config is not None else ""
        governs = "max_steps" if config is not None and config.max_steps > 0 else "epoch"
        for name, note in self.length_notes.items():
            colour = "#1e3a8a" if name == governs else "#6b7280"
            note.value = f'<span style="color:{colour}">&#8594; {html.escape(text)}</span>' if text else ""

    def _update_style_note(self, config: RunConfig) -> None:
        """Checked again only when the model, the training file (or its contents) or the columns change."""
        try:
            stat = Path(config.train_file).stat() if config.train_file else None
        except (OSError, ValueError):
            stat = None
        key = (config.model, config.train_file, config.columns, stat and (stat.st_mtime_ns, stat.st_size))
        if key == self._style_checked_for:
            return
        self._style_checked_for = key
        try:
            warning = self.style_check(config)
        except UserError:  # data or model not readable: validation (01) says what is wrong
            warning = None
        except Exception as exc:  # advice: a bug in it must not break the form, nor pass unseen
            warning = (f"The answer-style check failed with an internal error (a bug in nbtools: please report it): "
                       f"{type(exc).__name__}: {exc}")
        self.style_note.value = ("" if not warning else
                                 f'<span style="color:#b45309">&#9888; {html.escape(warning)}</span>')

    def _update_estimate(self, config: RunConfig) -> None:
        snapshot = {**config.to_dict(), "_gpu": self.gpu.value}
        if snapshot == self._estimated_for:
            return
        try:
            self.estimate.value = self.estimator(config, self.gpu.value)
        except UserError as exc:  # bad input or environment, explained in the message
            self.estimate.value = f"<i>Estimate unavailable: {_inline_code(str(exc))}</i>"
        except Exception as exc:  # the estimate is advice: a bug in it must not break the form, nor pass as advice
            self.estimate.value = ("<i>Estimate failed with an internal error (a bug in nbtools: please report it): "
                                   f"{_inline_code(f'{type(exc).__name__}: {exc}')}</i>")
        self._estimated_for = snapshot

    @property
    def errors(self) -> dict[str, str]:
        """Inline messages currently shown, by field name."""
        return {name: c.error for name, c in self.fields.items() if c.error}

    @property
    def config(self) -> RunConfig:
        """The config the form shows; raises ConfigError naming the field when a value is wrong."""
        config = self.refresh()
        if config is None:
            name, message = next(iter(self.errors.items()), ("config", self.form_error.value))
            raise ConfigError(name, _strip_tags(message), "correct the field marked in red")
        return config

    def set_config(self, config: RunConfig) -> None:
        """Show another config (e.g. one loaded from YAML)."""
        self._loading = True  # one refresh at the end, not one per field
        try:
            for name, control in self.fields.items():
                control.set(getattr(config, name))
        finally:
            self._loading = False
        self.refresh()

    # --- handlers (called by the browser, or directly by tests and headless runs) --------------
    def on_field_changed(self, change=None) -> None:
        if self._loading:
            return
        owner = change.get("owner") if isinstance(change, dict) else getattr(change, "owner", None)
        if owner is not None:
            self._follow_loss_preset(owner)
        self.status.value = ""
        self.refresh()

    def _follow_loss_preset(self, owner) -> None:
        """Picking a preset fills the loss fields; editing them away from the preset sets it back to custom."""
        preset = self.fields.get("loss_preset")
        if preset is None or "loss_type" not in self.fields or "loss_weights" not in self.fields:
            return
        try:
            loss_type, loss_weights = self.fields["loss_type"].parse(), self.fields["loss_weights"].parse()
        except FieldValueError:
            loss_type, loss_weights = [], None
        self._loading = True  # one refresh afterwards, not one per field set here
        try:
            if owner is preset.control:
                values = preset_values(preset.control.value, loss_type, loss_weights,
                                       self._value_or("label_smoothing", 0.0))
                for name, value in values.items():
                    if name in self.fields:
                        self.fields[name].set(value)
            elif owner in (self.fields["loss_type"].control, self.fields["loss_weights"].control):
                if not preset_matches(preset.control.value, loss_type, loss_weights):
                    preset.set("custom")
        finally:
            self._loading = False

    def _value_or(self, name: str, default):
        try:
            return self.fields[name].parse() if name in self.fields else default
        except FieldValueError:
            return default

    def _show_preset_note(self) -> None:
        preset = self.fields.get("loss_preset")
        chosen = LOSS_PRESETS.get(preset.control.value) if preset is not None else None
        self.preset_note.value = (f'<span style="color:#555"><i>{html.escape(preset.control.value)}</i>: '
                                  f"{html.escape(chosen.help)}.</span>" if chosen else "")

    def on_save_clicked(self, button=None) -> None:
        try:
            path = self.save()
        except ConfigError as exc:
            self.status.value = f'<span style="color:#c62828">Not saved: {html.escape(str(exc))}</span>'
        except OSError as exc:
            self.status.value = (f'<span style="color:#c62828">Not saved: cannot write {html.escape(self.save_path.value)}'
                                 f' ({html.escape(exc.strerror or str(exc))}); choose another path.</span>')
        else:
            self.status.value = self._saved_message(path)

    def _saved_message(self, path: Path) -> str:
        # The time (and count) change on every click, so a second Save visibly did something.
        again = f" (saved {self._saves} times)" if self._saves > 1 else ""
        return (f'<span style="color:#15803d">&#10004; Saved to <code>{html.escape(str(path))}</code> '
                f'at {time.strftime("%H:%M:%S")}{again}</span>')

    def save(self, path: Union[str, Path, None] = None) -> Path:
        """Write the config YAML (to ``path`` or the form's 'save to' box) and return its path."""
        config = self.config
        target = Path(path or self.save_path.value).expanduser()
        if path is not None:
            self.save_path.value = str(path)
        written = config.to_yaml(target).resolve()
        self._saves += 1
        self.status.value = self._saved_message(written)
        return written

    # --- static views (kept in executed notebooks, readable without a widget manager) ---------
    def summary_html(self) -> str:
        """The config as an HTML table (non-default values in bold) followed by the current estimate."""
        return str(config_table(self.config)) + self.style_note.value + self.estimate.value

    def summary(self) -> HTMLView:
        return HTMLView(self.summary_html())


def _inline_code(text: str) -> str:
    """Escaped text with `commands` shown as code, not as literal backticks."""
    import re

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _labelled(label: str, control: widgets.Widget, *rest: widgets.Widget) -> widgets.HBox:
    """A control with its name in front, laid out like the field rows; its tooltip stays on the input."""
    name = widgets.HTML(f'<span class="nbtools-field-name" title="{html.escape(control.tooltip or "")}">'
                        f'{html.escape(label)}</span>', layout=widgets.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH))
    name.add_class("nbtools-field-label")
    return widgets.HBox([name, control, *rest], layout=widgets.Layout(align_items="center"))


def _strip_tags(text: str) -> str:
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def form_from_config(config: RunConfig, save_path: Union[str, Path, None] = None,
                     estimator: Optional[Estimator] = None, style_check: Optional[StyleCheck] = None) -> ConfigForm:
    """A form showing ``config``; its Save button writes to ``save_path``. ``style_check`` (default: read the
    model's kind and the training file's chosen answers) warns when they do not match."""
    return ConfigForm(config, save_path=save_path, estimator=estimator, style_check=style_check)


def config_from_form(form: ConfigForm) -> RunConfig:
    """The config the form currently shows (validated); raises ConfigError naming the bad field."""
    return form.config
