"""An account's context: the typed records that importers, events and signals share.

Every record is a pydantic model, so a CSV row, a JSON document and an event body
are checked by the same rules. Each kind has a natural ``key`` (the record a
later row of the same key replaces) and a ``time``: when the fact was observed.
A record older than the stored one of the same key is stale and is not applied,
so events that arrive out of order never roll the context back.

Times are timezone-aware UTC datetimes; a bare date means midnight UTC. Money is
a float in ``currency`` (ISO 4217, upper case); the parsing of written amounts
("$1,200.50", "¥8,000", "8000 CNY") lives in ``copilot.importers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

Stage = Literal["prospecting", "engaging", "won", "lost"]
ContactChangeKind = Literal["joined", "role_changed", "left"]


def as_utc(value: Any) -> Any:
    """A date or datetime (or ISO text) as an aware UTC datetime; anything else unchanged.

    Naive datetimes are read as UTC: CRM exports rarely say their zone, and
    guessing the server's local zone would shift every date by hours.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return value  # pydantic reports it with the field's name
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


# Dates outside these years are typos (9999 for "no end", 2081 for 2018), and date arithmetic
# near the end of the calendar overflows: refused with the field's name.
FIRST_YEAR, LAST_YEAR = 1900, 2200
# Counts, prices and amounts above this are typos too; their sums must stay exact in a float.
MAX_NUMBER = 1e15


def plausible_time(value: datetime) -> datetime:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(
            f"year {value.year} is outside {FIRST_YEAR}-{LAST_YEAR}; check the date (leave an "
            "open end empty rather than writing a far-off year)"
        )
    return value


UtcTime = Annotated[datetime, BeforeValidator(as_utc), AfterValidator(plausible_time)]


class Record(BaseModel):
    """Base of every context record: ``kind`` names the table, ``key`` the row."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: ClassVar[str]
    time: UtcTime

    @model_validator(mode="after")
    def _plausible_numbers(self) -> Record:
        for name, value in self:
            if isinstance(value, int | float) and not isinstance(value, bool):
                if abs(value) > MAX_NUMBER:
                    raise ValueError(
                        f"{name} = {value:g} is larger than {MAX_NUMBER:g}; check the number"
                    )
        return self

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def account(self) -> str | None:
        """The account the record belongs to; None for shared facts (products, policies)."""
        return getattr(self, "account_id", None)


class Account(Record):
    kind: ClassVar[str] = "account"
    account_id: str = Field(min_length=1)
    name: str
    sector: str | None = None
    region: str | None = None
    revenue_musd: float | None = None
    employees: int | None = None
    parent: str | None = None
    # The rep who owns the account and their team (a rep sees only their team's accounts).
    owner: str | None = None
    team: str | None = None

    @property
    def key(self) -> str:
        return self.account_id


class SalesAgent(Record):
    kind: ClassVar[str] = "agent"
    agent: str = Field(min_length=1)
    manager: str | None = None
    team: str | None = None  # the regional office in the CRM data

    @property
    def key(self) -> str:
        return self.agent


class Contact(Record):
    """A person at an account, as currently known (a role change replaces the row)."""

    kind: ClassVar[str] = "contact"
    contact_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    name: str
    role: str  # free text in the team's language, e.g. "procurement lead", "采购负责人"
    champion: bool = False
    active: bool = True

    @property
    def key(self) -> str:
        return self.contact_id


class ContactChange(Record):
    """A contact joined, changed role or left; ``time`` is when it happened."""

    kind: ClassVar[str] = "contact_change"
    change_id: str = Field(min_length=1)
    contact_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    change: ContactChangeKind
    old_role: str | None = None
    new_role: str | None = None

    @property
    def key(self) -> str:
        return self.change_id


class Product(Record):
    """A price-list entry. The margin floor is the lowest unit price ever allowed."""

    kind: ClassVar[str] = "product"
    product_id: str = Field(min_length=1)
    name: str
    series: str | None = None
    list_price: float = Field(gt=0)
    currency: str = "USD"
    unit_cost: float | None = Field(None, ge=0)
    margin_floor: float | None = Field(None, ge=0)
    lead_time_days: int | None = Field(None, ge=0)

    @property
    def key(self) -> str:
        return self.product_id


class Order(Record):
    kind: ClassVar[str] = "order"
    order_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1)
    quantity: int = Field(1, ge=1)
    total: float = Field(ge=0)
    currency: str = "USD"

    @property
    def key(self) -> str:
        return self.order_id


class Opportunity(Record):
    """A deal in the pipeline. ``time`` is the last change; the dates are the stage history."""

    kind: ClassVar[str] = "opportunity"
    opportunity_id: str = Field(min_length=1)
    account_id: str | None = None  # the CRM leaves it blank for early prospects
    product_id: str = Field(min_length=1)
    agent: str | None = None
    stage: Stage
    engage_date: UtcTime | None = None
    close_date: UtcTime | None = None
    value: float | None = Field(None, ge=0)
    currency: str = "USD"
    quantity: int | None = Field(None, ge=1)  # units in play, when the CRM records them

    @property
    def key(self) -> str:
        return self.opportunity_id


class Milestone(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    due: UtcTime
    done: bool = False
    # When a tender_milestone event last changed it; None when it came with the tender. An
    # older event for this milestone is then ignored, while one for another milestone is not.
    observed: UtcTime | None = None


class Tender(Record):
    kind: ClassVar[str] = "tender"
    tender_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    title: str
    product_ids: list[str] = []
    opens_at: UtcTime | None = None
    deadline: UtcTime
    budget: float | None = Field(None, ge=0)
    currency: str = "USD"
    milestones: list[Milestone] = []
    status: Literal["announced", "open", "submitted", "awarded", "lost", "cancelled"] = "announced"
    quantity: int | None = Field(None, ge=1)  # units the tender asks for, when it says

    @property
    def key(self) -> str:
        return self.tender_id


class StockLevel(Record):
    """Units on hand for a product, with what is already on its way."""

    kind: ClassVar[str] = "stock"
    product_id: str = Field(min_length=1)
    on_hand: int = Field(ge=0)
    incoming: int = Field(0, ge=0)
    incoming_eta: UtcTime | None = None
    # To replenish beyond on_hand + incoming; None = the price list's, else
    # quotes.default_lead_time_days.
    lead_time_days: int | None = Field(None, ge=0)

    @property
    def key(self) -> str:
        return self.product_id


class CompetitorPrice(Record):
    kind: ClassVar[str] = "competitor_price"
    observation_id: str = Field(min_length=1)
    competitor: str = Field(min_length=1)
    product_id: str = Field(min_length=1)
    unit_price: float = Field(gt=0)
    currency: str = "USD"
    account_id: str | None = None  # None: seen in the market, not at one account
    source: str | None = None

    @property
    def key(self) -> str:
        return self.observation_id


class PolicyChange(Record):
    """An industry regulation or policy change; ``time`` is when it was published."""

    kind: ClassVar[str] = "policy"
    policy_id: str = Field(min_length=1)
    title: str
    sectors: list[str] = Field(min_length=1)
    effective: UtcTime
    summary: str | None = None
    impact: Literal["opportunity", "risk", "neutral"] = "neutral"

    @property
    def key(self) -> str:
        return self.policy_id

    @field_validator("sectors")
    @classmethod
    def _folded(cls, value: list[str]) -> list[str]:
        return [s.strip().casefold() for s in value if s.strip()]


class BudgetWindow(Record):
    """A period in which the account can commit spend (a fiscal year, a quarter's budget)."""

    kind: ClassVar[str] = "budget_window"
    window_id: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    opens: UtcTime
    closes: UtcTime
    amount: float | None = Field(None, ge=0)
    currency: str = "USD"

    @model_validator(mode="after")
    def _opens_before_closing(self) -> BudgetWindow:
        if self.closes <= self.opens:
            raise ValueError(
                f"the window closes ({self.closes.isoformat()}) before it opens "
                f"({self.opens.isoformat()}); swap opens and closes or fix the dates"
            )
        return self

    @property
    def key(self) -> str:
        return self.window_id


RECORD_TYPES: dict[str, type[Record]] = {
    t.kind: t
    for t in (
        Account,
        SalesAgent,
        Contact,
        ContactChange,
        Product,
        Order,
        Opportunity,
        Tender,
        StockLevel,
        CompetitorPrice,
        PolicyChange,
        BudgetWindow,
    )
}


@dataclass(frozen=True)
class CallNote:
    """What the account's stored calls said, reduced to what signals need.

    ``objections`` are (type, customer text, start s) of the objections mined from
    the call; ``turns`` are the customer's utterances (speaker, start s, text), so
    competitor mentions can be found in any language by name.
    """

    call_id: str
    time: datetime | None
    outcome: str | None
    polarity: int  # +1 won, -1 lost, 0 open or unknown (settings.outcomes)
    turns: list[tuple[str, float, str]] = field(default_factory=list)
    objections: list[tuple[str, str, float]] = field(default_factory=list)


@dataclass
class AccountContext:
    """Everything known about one account at ``as_of``; rows later than ``as_of`` are left out.

    Shared facts (products, stock, policies for the account's sector, market
    competitor prices) are included so that a signal needs nothing else.
    """

    account: Account
    as_of: datetime
    agents: dict[str, SalesAgent] = field(default_factory=dict)
    contacts: list[Contact] = field(default_factory=list)
    contact_changes: list[ContactChange] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    tenders: list[Tender] = field(default_factory=list)
    budget_windows: list[BudgetWindow] = field(default_factory=list)
    competitor_prices: list[CompetitorPrice] = field(default_factory=list)
    policies: list[PolicyChange] = field(default_factory=list)
    products: dict[str, Product] = field(default_factory=dict)
    stock: dict[str, StockLevel] = field(default_factory=dict)
    calls: list[CallNote] = field(default_factory=list)

    def products_in_play(self) -> set[str]:
        """Products of open opportunities and live tenders, else of the account's orders."""
        live = {o.product_id for o in self.opportunities if o.stage in ("prospecting", "engaging")}
        live |= {
            p for t in self.tenders if t.status in ("announced", "open") for p in t.product_ids
        }
        return live or {o.product_id for o in self.orders}
