"""Contacts: the CSV import coordinators use (a spreadsheet export), and tags.

A contacts file is read line by line (``decode_lines``: UTF-8, or Windows-1252 for a file
with no UTF-8 in it at all; ``_records``: a quote left open loses its own line only), then
the delimiter and header, then row by row: a bad row is reported with its line number and
reason and the good rows import. Headers may be
English or French, in any case, with or without accents (ARCHITECTURE, "Contacts CSV").
Phone numbers are read in every form people write them, overseas numbers included, and
stored in E.164; a landline is kept but flagged (no SMS reaches it).

Rows of the file that share an address are one person (merged before anything is stored).
Importing merges into what is known: tags are added, empty fields filled, nothing erased;
a re-import adds nothing new. The suppression list is respected: a person who said STOP
and was then forgotten is not imported again. The work is done in batches (one
transaction and a few bulk queries per thousand people), so a large file imports quickly.


The parts: ``csv_file`` (reading a file), ``storing`` (the import), ``reading`` (looking
people up and tagging them); ``base`` holds what they share."""

from bot.domain.contacts.base import (
    NEWS,
)
from bot.domain.contacts.csv_file import (
    AddressError,
    decode_lines,
    parse_contact_address,
    parse_phone_number,
    parse_tags,
    phone_kind,
    read_contacts,
)
from bot.domain.contacts.reading import (
    ContactRow,
    add_tags,
    attach_shared_phone,
    find,
    list_contacts,
    remove_tags,
)
from bot.domain.contacts.storing import (
    ImportSummary,
    import_contacts,
)

__all__ = [
    "AddressError",
    "ContactRow",
    "ImportSummary",
    "NEWS",
    "add_tags",
    "attach_shared_phone",
    "decode_lines",
    "find",
    "import_contacts",
    "list_contacts",
    "parse_contact_address",
    "parse_phone_number",
    "parse_tags",
    "phone_kind",
    "read_contacts",
    "remove_tags",
]
