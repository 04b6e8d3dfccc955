# Long and short alike: pages, tables and the admin write a moment the same way ("5 декабря 2026, 14:03").
DATE_FORMAT = SHORT_DATE_FORMAT = "j E Y"
DATETIME_FORMAT = SHORT_DATETIME_FORMAT = "j E Y, H:i"
