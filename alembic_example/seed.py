"""Fill the example database with deterministic, realistic data.

    python seed.py [--url URL] [--customers N]

Run the migrations first (``alembic upgrade heads``). The URL defaults to the one in alembic.ini;
a database whose customers table already has rows is left alone.
"""

from __future__ import annotations

import argparse
import random
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from alembic.config import Config
from models import Customer, CustomerService, FamilyAccount, FamilyMember, ServiceCategory, ServicePackage
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

HERE = Path(__file__).resolve().parent
NOW = datetime(2024, 7, 1, 9, 0)  # a fixed "today" keeps every run identical

# category -> description, [(package, price, duration in months, still sold)]
CATALOGUE = {
    "Mobilfunk": (
        "Handyverträge und Prepaid-Tarife / Hợp đồng điện thoại di động",
        [
            ("Prepaid Smart S", "9.99", 1, True),
            ("Allnet Flat M", "19.99", 24, True),
            ("Allnet Flat L", "29.99", 24, True),
            ("Allnet Flat 2019", "24.99", 24, False),
        ],
    ),
    "Internet & Festnetz": (
        "DSL, Glasfaser und Festnetz / Internet và điện thoại cố định",
        [("DSL 100", "34.99", 24, True), ("Glasfaser 500", "49.99", 24, True)],
    ),
    "Übersetzungen": (
        "Beglaubigte Übersetzungen und Dolmetscher / Dịch thuật công chứng và phiên dịch",
        [("Urkundenübersetzung", "45.00", 1, True), ("Dolmetscher Behördentermin", "60.00", 1, True)],
    ),
    "Versicherungen": (
        "Haftpflicht, Hausrat und Kfz / Bảo hiểm",
        [
            ("Haftpflicht Single", "4.50", 12, True),
            ("Hausrat Familie", "8.90", 12, True),
            ("Kfz-Haftpflicht", "39.00", 12, True),
        ],
    ),
    "Reisen & Visa": (
        "Visumanträge und Flugbuchungen / Thị thực và vé máy bay",
        [("Visumantrag Vietnam", "85.00", 3, True), ("Flugbuchung Service", "25.00", 1, True)],
    ),
}

VIETNAMESE_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Ngô"]
VIETNAMESE_MIDDLE = ["Minh", "Thanh", "Ngọc"]
VIETNAMESE_GIVEN = ["An", "Bình", "Dũng", "Hải", "Hương", "Lan", "Linh", "Mai", "Nam", "Thảo", "Tuấn"]
GERMAN_FAMILY = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann"]
GERMAN_GIVEN = ["Anna", "Lukas", "Sophie", "Jonas", "Marie", "Felix", "Lena", "Paul"]
EMAIL_DOMAINS = ["example.com", "example.org"]
NOTES = ["Bevorzugt Kontakt auf Vietnamesisch", "Rechnung per Post", "Termine nur nachmittags"]
SERVICE_STATUSES = ["active", "expired", "pending", "cancelled"]
SERVICE_STATUS_WEIGHTS = [50, 25, 15, 10]


def days_ago(rng: random.Random, fewest: int, most: int) -> datetime:
    return NOW - timedelta(days=rng.randint(fewest, most))


def ascii_fold(text: str) -> str:
    text = text.replace("Đ", "D").replace("đ", "d")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def make_customer(rng: random.Random, number: int) -> tuple[Customer, str]:
    """A customer and their family name (Vietnamese names put it first, German ones last)."""
    if rng.random() < 0.7:
        family, given = rng.choice(VIETNAMESE_FAMILY), rng.choice(VIETNAMESE_GIVEN)
        name = f"{family} {rng.choice(VIETNAMESE_MIDDLE)} {given}"
    else:
        family, given = rng.choice(GERMAN_FAMILY), rng.choice(GERMAN_GIVEN)
        name = f"{given} {family}"
    customer = Customer(
        customer_code=f"KUN{number:05d}",
        name=name,
        email=f"{ascii_fold(given)}.{ascii_fold(family)}{number}@{rng.choice(EMAIL_DOMAINS)}",
        phone=f"+49 15{rng.randint(1, 9)} {rng.randint(1_000_000, 9_999_999)}",
        status=rng.choices(["active", "inactive"], weights=[9, 1])[0],
        created_at=days_ago(rng, 1200, 2400),
        notes=rng.choice(NOTES) if rng.random() < 0.15 else None,
    )
    return customer, family


def make_service(rng: random.Random, package: ServicePackage, status: str) -> CustomerService:
    """A booking whose dates fit its status: active ones run past NOW, expired ones ended before it."""
    duration = timedelta(days=30 * package.duration_months)
    if status == "pending":
        activated_at = expires_at = None
    elif status == "active":
        activated_at = days_ago(rng, 0, duration.days - 1)
        expires_at = activated_at + duration
    elif status == "expired":
        expires_at = days_ago(rng, 1, 365)
        activated_at = expires_at - duration
    else:  # cancelled: keeps the planned dates
        activated_at = days_ago(rng, 30, 700)
        expires_at = activated_at + duration
    return CustomerService(
        package=package, status=status, activated_at=activated_at, expires_at=expires_at, price=package.price
    )


def build(customer_count: int) -> tuple[list[ServiceCategory], list[Customer], list[FamilyAccount]]:
    rng = random.Random(20240701)
    categories = [
        ServiceCategory(
            name=name,
            description=description,
            packages=[
                ServicePackage(name=p, price=Decimal(price), duration_months=months, is_active=active)
                for p, price, months, active in packages
            ],
        )
        for name, (description, packages) in CATALOGUE.items()
    ]
    on_sale = [p for c in categories for p in c.packages if p.is_active]
    all_packages = [p for c in categories for p in c.packages]

    people = [make_customer(rng, n) for n in range(1, customer_count + 1)]
    customers = [c for c, _ in people]
    for customer in customers:
        for status in rng.choices(SERVICE_STATUSES, SERVICE_STATUS_WEIGHTS, k=rng.randint(0, 3)):
            package = rng.choice(on_sale if status in ("pending", "active") else all_packages)
            customer.services.append(make_service(rng, package, status))

    # Families draw from a shuffled pool so nobody belongs to two of them.
    pool = rng.sample(people, len(people))
    families = []
    for _ in range(customer_count // 10):
        max_members = rng.randint(4, 6)
        (owner, family_name), *others = [pool.pop() for _ in range(rng.randint(2, max_members))]
        members = [FamilyMember(customer=owner, role="owner", joined_at=days_ago(rng, 400, 900))]
        members += [FamilyMember(customer=c, joined_at=days_ago(rng, 1, 399)) for c, _ in others]
        families.append(
            FamilyAccount(
                owner=owner,
                name=f"Familie {family_name}",
                max_members=max_members,
                current_members=len(members),
                members=members,
            )
        )
    return categories, customers, families


def main(argv: list[str] | None = None) -> int:
    default_url = Config(str(HERE / "alembic.ini")).get_main_option("sqlalchemy.url")
    parser = argparse.ArgumentParser(description="Seed the example database with deterministic data.")
    parser.add_argument("--url", default=default_url, help="SQLAlchemy URL (default: %(default)s)")
    parser.add_argument(
        "--customers", type=int, default=50, metavar="N", help="number of customers (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    engine = create_engine(args.url)
    where = engine.url.render_as_string(hide_password=True)
    with Session(engine) as session, session.begin():
        existing = session.scalar(select(func.count()).select_from(Customer))
        if existing:
            print(f"customers already has {existing} rows in {where}; not seeding")
            return 0
        categories, customers, families = build(args.customers)
        session.add_all([*categories, *customers, *families])
        services = sum(len(c.services) for c in customers)
        members = sum(f.current_members for f in families)
    print(
        f"seeded {len(customers)} customers, {len(categories)} service categories, "
        f"{services} customer services and {len(families)} family accounts ({members} members) into {where}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
