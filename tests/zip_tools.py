"""Build altered copies of zip archives for the download tests."""

import zipfile


def rewrite_zip(source, target, edit):
    """Copy a zip, letting ``edit(name, data)`` return a new (name, data) or None to drop it."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            changed = edit(info.filename, src.read(info))
            if changed is not None:
                out.writestr(changed[0], changed[1])
    return target
