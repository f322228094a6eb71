"""The example schema as it stands after the last revision; ``Base.metadata`` is Alembic's target.

Types are portable across SQLite, PostgreSQL and MariaDB: every string has a length and
timestamps are naive UTC ``DateTime`` columns.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_code: Mapped[str] = mapped_column(String(16), unique=True)  # KUN00001
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), server_default="active")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    notes: Mapped[str | None] = mapped_column(Text)

    services: Mapped[list[CustomerService]] = relationship(back_populates="customer")


class ServiceCategory(Base):
    __tablename__ = "service_categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)

    packages: Mapped[list[ServicePackage]] = relationship(back_populates="category")


class ServicePackage(Base):
    __tablename__ = "service_packages"
    __table_args__ = (CheckConstraint("price >= 0", name="price_non_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("service_categories.id"))
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    duration_months: Mapped[int]
    is_active: Mapped[bool] = mapped_column(server_default=true())

    category: Mapped[ServiceCategory] = relationship(back_populates="packages")


class CustomerService(Base):
    __tablename__ = "customer_services"
    __table_args__ = (CheckConstraint("status IN ('pending', 'active', 'expired', 'cancelled')", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("service_packages.id"))
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    activated_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))  # what the customer pays, fixed at purchase

    customer: Mapped[Customer] = relationship(back_populates="services")
    package: Mapped[ServicePackage] = relationship()


class FamilyAccount(Base):
    __tablename__ = "family_accounts"
    __table_args__ = (CheckConstraint("current_members <= max_members", name="members_within_limit"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    name: Mapped[str] = mapped_column(String(200))
    max_members: Mapped[int] = mapped_column(server_default=text("5"))
    current_members: Mapped[int] = mapped_column(server_default=text("0"))

    owner: Mapped[Customer] = relationship()
    members: Mapped[list[FamilyMember]] = relationship(back_populates="family_account")


class FamilyMember(Base):
    __tablename__ = "family_members"
    __table_args__ = (UniqueConstraint("family_account_id", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    family_account_id: Mapped[int] = mapped_column(ForeignKey("family_accounts.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    role: Mapped[str] = mapped_column(String(20), server_default="member")  # owner | member
    joined_at: Mapped[datetime] = mapped_column(server_default=func.now())

    family_account: Mapped[FamilyAccount] = relationship(back_populates="members")
    customer: Mapped[Customer] = relationship()
