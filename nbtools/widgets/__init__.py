"""Forms for notebooks: thin ipywidgets views over config objects, nothing else.

    form = form_from_config(RunConfig(...), save_path="runs/notebooks/config.yaml")
    display(form)                 # Basic / Data and run / Advanced, live estimate, Save
    config = config_from_form(form)

The glue between a notebook's ``parameters`` cell and the config lives in
``nbtools.widgets.notebook``.
"""

from nbtools.widgets.config_form import (
    BASIC_FIELDS,
    DATA_FIELDS,
    ConfigForm,
    config_from_form,
    form_from_config,
)
from nbtools.widgets.fields import FieldControl, FieldSpec, FieldValueError, field_specs

__all__ = [
    "BASIC_FIELDS", "DATA_FIELDS", "ConfigForm", "FieldControl", "FieldSpec", "FieldValueError",
    "config_from_form", "field_specs", "form_from_config",
]
