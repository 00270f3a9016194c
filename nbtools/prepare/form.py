"""Widgets for the pair strategies, the judge and the endpoints: a thin view over :class:`PrepareConfig`.

The form shows the config's ``pairs`` fields (strategies, judge and its terms, thresholds,
corruption) and its ``endpoint`` fields (sampling and judging through an OpenAI-compatible
server) with the config's own help and limits; a field shows only when the choice it belongs to
is made (the rule judge's terms, the server's address for backend openai, ...). ``form.config``
returns a new, checked ``PrepareConfig``. Nothing here decides anything: the config object does.
"""

from __future__ import annotations

import dataclasses

from .config import PrepareConfig, PrepareConfigError

JUDGE_FIELDS = {"rule": ("must_include", "must_not_include"), "vocabulary": ("vocabulary",),
                "endpoint": ("judge_url", "judge_model", "judge_template", "judge_scale")}
BACKEND_FIELDS = {"openai": ("base_url", "served_model", "extra_body")}
REQUEST_FIELDS = ("concurrency", "request_timeout", "max_retries")  # shown when any server is used


class PrepareForm:
    """``PrepareForm(config)``; display it, change values, then read ``form.config``."""

    def __init__(self, config: PrepareConfig, groups=("pairs", "endpoint")):
        import ipywidgets as widgets

        from nbtools.widgets.fields import FieldControl, field_specs

        groups = (groups,) if isinstance(groups, str) else tuple(groups)
        self._base = config
        self.controls = {spec.name: FieldControl(spec, getattr(config, spec.name))
                         for group in groups for spec in field_specs(PrepareConfig) if spec.group == group}
        self.status = widgets.HTML()
        self.widget = widgets.VBox([c.box for c in self.controls.values()] + [self.status])
        for chooser in ("judge", "backend"):
            if chooser in self.controls:
                self.controls[chooser].control.observe(lambda _change: self._show_fields(), names="value")
        self._show_fields()

    def _value(self, name: str):
        control = self.controls.get(name)
        return control.control.value if control is not None else getattr(self._base, name)

    def _show_fields(self) -> None:
        judge, backend = self._value("judge"), self._value("backend")
        shown = {f: judge == name for name, fields in JUDGE_FIELDS.items() for f in fields}
        shown.update({f: backend == name for name, fields in BACKEND_FIELDS.items() for f in fields})
        shown.update({f: backend == "openai" or judge == "endpoint" for f in REQUEST_FIELDS})
        for field_name, visible in shown.items():
            if field_name in self.controls:
                self.controls[field_name].box.layout.display = "" if visible else "none"

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
