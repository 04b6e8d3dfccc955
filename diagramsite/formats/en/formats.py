# Long and short alike: pages, tables and the admin write a moment the same way ("5 Dec 2026, 14:03").
DATE_FORMAT = SHORT_DATE_FORMAT = "j M Y"
DATETIME_FORMAT = SHORT_DATETIME_FORMAT = "j M Y, H:i"
