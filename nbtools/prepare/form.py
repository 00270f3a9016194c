"""Widgets for the pair strategies and the judge: a thin view over :class:`PrepareConfig`.

The form shows the config's ``pairs`` fields (strategies, judge and its terms, thresholds,
corruption) with the config's own help and limits; ``form.config`` returns a new, checked
``PrepareConfig``. Nothing here decides anything: the config object does.
"""

from __future__ import annotations

import dataclasses

from .config import PrepareConfig, PrepareConfigError

JUDGE_FIELDS = {"rule": ("must_include", "must_not_include"), "vocabulary": ("vocabulary",)}


class PrepareForm:
    """``PrepareForm(config)``; display it, change values, then read ``form.config``."""

    def __init__(self, config: PrepareConfig, group: str = "pairs"):
        import ipywidgets as widgets

        from nbtools.widgets.fields import FieldControl, field_specs

        self._base = config
        self.controls = {spec.name: FieldControl(spec, getattr(config, spec.name))
                         for spec in field_specs(PrepareConfig) if spec.group == group}
        self.status = widgets.HTML()
        self.widget = widgets.VBox([c.box for c in self.controls.values()] + [self.status])
        self.controls["judge"].control.observe(lambda _change: self._show_judge_fields(), names="value")
        self._show_judge_fields()

    def _show_judge_fields(self) -> None:
        judge = self.controls["judge"].control.value
        for name, fields in JUDGE_FIELDS.items():
            for field_name in fields:
                self.controls[field_name].box.layout.display = "" if judge == name else "none"

    @property
    def config(self) -> PrepareConfig:
        """The config with the form's values; a wrong value is marked in the form and raised."""
        from nbtools.widgets.fields import FieldValueError

        values, errors = {}, []
        for name, control in self.controls.items():
            try:
                empty_list = control.spec.is_list and not str(control.control.value).strip()
                values[name] = [] if empty_list else control.parse()  # an empty term list is a valid choice
                control.show_error(None)
            except FieldValueError as exc:
                control.show_error(exc.reason, exc.fix)
                errors.append(str(exc))
        if errors:
            self.status.value = "<span style='color:#c62828'>" + "<br>".join(errors) + "</span>"
            raise PrepareConfigError("; ".join(errors))
        config = dataclasses.replace(self._base, **values)
        try:
            config.check()
        except PrepareConfigError as exc:
            self.status.value = f"<span style='color:#c62828'>{exc}</span>"
            raise
        self.status.value = ""
        return config

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
