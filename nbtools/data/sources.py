"""(placeholder until the table-source reader lands)"""


def is_table_source(spec) -> bool:
    return False


def open_table_source(spec, columns=None):
    from nbtools.data.load import UnreadableFile

    raise UnreadableFile(f"{spec}: Parquet/Arrow data is not supported yet")
