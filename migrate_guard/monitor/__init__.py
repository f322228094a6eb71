"""Operations: `status` (health), alerts, scheduled backups and the HTML status page."""
