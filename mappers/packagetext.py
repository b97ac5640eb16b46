"""README.TXT and INDEX.HTM of an IHE XDM package: the human-readable side of the media (ITI32-003).

Used by ``mappers.xdm`` when building; pure text generation, every value HTML-escaped in INDEX.HTM. The
content follows what French producers write (MSSANTE.md §5.2: sender, application, instructions, tree).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from mappers.documents import Document


def readme_txt(
    documents: Sequence[Document],
    names: Sequence[str],
    *,
    when: datetime,
    sender: str,
    application: str,
) -> bytes:
    """README.TXT in French, CRLF line ends (it is read on any system)."""
    lines = [
        "IHE XDM - Echange de documents de sante",
        "",
        f"Emetteur : {sender or 'non precise'}",
        f"Application de l'emetteur : {application}",
        f"Date de creation : {when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "",
        "Instructions : ouvrir INDEX.HTM dans un navigateur pour consulter les documents.",
        "Les metadonnees IHE XDS sont dans IHE_XDM/SUBSET01/METADATA.XML.",
        "",
        "Arborescence :",
        "  README.TXT",
        "  INDEX.HTM",
        "  IHE_XDM/SUBSET01/METADATA.XML",
        *(f"  IHE_XDM/SUBSET01/{name}  ({d.mime_type})" for name, d in zip(names, documents, strict=True)),
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", errors="replace")


def index_htm(documents: Sequence[Document], names: Sequence[str], *, folder: str) -> bytes:
    """INDEX.HTM listing each document with a link to its file."""
    rows = "\n".join(
        f'<li><a href="{html.escape(folder + name)}">{html.escape(d.title)}</a> '
        f"({html.escape(d.type_code.label or d.type_code.code)})</li>"
        for name, d in zip(names, documents, strict=True)
    )
    page = (
        '<!DOCTYPE html>\n<html lang="fr">\n<head><meta charset="utf-8">'
        "<title>IHE XDM</title></head>\n<body>\n<h1>Documents de sant\u00e9</h1>\n"
        f"<ul>\n{rows}\n</ul>\n"
        '<p><a href="README.TXT">README.TXT</a></p>\n</body>\n</html>\n'
    )
    return page.encode("utf-8", errors="replace")
