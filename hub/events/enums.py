"""Code sets of the customer path, shared by the pydantic models and the Avro enums.

Symbols are upper-case English so they are valid Avro enum symbols; adding a symbol is a
backward-compatible change, renaming or removing one is not (``hub schemas check`` catches it).
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """How a meeting or registration took place (asiointikanava)."""

    FACE_TO_FACE = "FACE_TO_FACE"
    PHONE = "PHONE"
    VIDEO = "VIDEO"
    ELECTRONIC = "ELECTRONIC"


class LabourMarketStatus(StrEnum):
    """The jobseeker's labour-market position at registration (työmarkkinatilanne)."""

    UNEMPLOYED = "UNEMPLOYED"
    LAID_OFF = "LAID_OFF"
    PART_TIME_EMPLOYED = "PART_TIME_EMPLOYED"
    EMPLOYED = "EMPLOYED"
    STUDENT = "STUDENT"
    OUTSIDE_LABOUR_FORCE = "OUTSIDE_LABOUR_FORCE"


class PlanType(StrEnum):
    """Kind of plan agreed with the jobseeker (työllistymissuunnitelma and its variants)."""

    EMPLOYMENT_PLAN = "EMPLOYMENT_PLAN"
    INTEGRATION_PLAN = "INTEGRATION_PLAN"
    ACTIVATION_PLAN = "ACTIVATION_PLAN"
    MULTI_SECTORAL_PLAN = "MULTI_SECTORAL_PLAN"


class ObligationReduction(StrEnum):
    """Why the job-search obligation is below the default of four a month."""

    LAYOFF = "LAYOFF"
    PART_TIME_WORK = "PART_TIME_WORK"
    SELF_MOTIVATED_STUDY = "SELF_MOTIVATED_STUDY"
    SERVICE_PARTICIPATION = "SERVICE_PARTICIPATION"
    LOCAL_LABOUR_MARKET = "LOCAL_LABOUR_MARKET"
    PERSONAL_CIRCUMSTANCES = "PERSONAL_CIRCUMSTANCES"


class ConversationType(StrEnum):
    """Kind of job-search conversation (työnhakukeskustelu)."""

    SUPPLEMENTARY = "SUPPLEMENTARY"
    INTENSIFIED = "INTENSIFIED"
    ADDITIONAL_PERIOD = "ADDITIONAL_PERIOD"
    FOLLOW_UP = "FOLLOW_UP"


class JobOfferResult(StrEnum):
    """What came of a job offer (työtarjouksen lopputulos)."""

    APPLIED = "APPLIED"
    HIRED = "HIRED"
    NOT_SELECTED = "NOT_SELECTED"
    DID_NOT_APPLY = "DID_NOT_APPLY"
    REFUSED = "REFUSED"


class PayerKind(StrEnum):
    """Who pays the unemployment benefit: Kela or the person's unemployment fund."""

    KELA = "KELA"
    UNEMPLOYMENT_FUND = "UNEMPLOYMENT_FUND"


class BenefitType(StrEnum):
    """Unemployment benefit the statement or accrual concerns."""

    LABOUR_MARKET_SUBSIDY = "LABOUR_MARKET_SUBSIDY"
    BASIC_DAILY_ALLOWANCE = "BASIC_DAILY_ALLOWANCE"
    EARNINGS_RELATED_ALLOWANCE = "EARNINGS_RELATED_ALLOWANCE"


class StatementOutcome(StrEnum):
    """Result of a labour-policy statement (työvoimapoliittinen lausunto) for the payer."""

    NO_OBSTACLE = "NO_OBSTACLE"
    SANCTION_PERIOD = "SANCTION_PERIOD"
    WORK_REQUIREMENT = "WORK_REQUIREMENT"
    NOT_ENTITLED = "NOT_ENTITLED"


class StatementRequestReason(StrEnum):
    """Why a payer asks for a statement (lausuntopyyntö)."""

    NEW_APPLICATION = "NEW_APPLICATION"
    CHANGE_IN_CIRCUMSTANCES = "CHANGE_IN_CIRCUMSTANCES"
    RESUMED_PAYMENT = "RESUMED_PAYMENT"


class ServiceType(StrEnum):
    """Employment service a jobseeker can be enrolled in."""

    LABOUR_MARKET_TRAINING = "LABOUR_MARKET_TRAINING"
    COACHING = "COACHING"
    CAREER_GUIDANCE = "CAREER_GUIDANCE"
    WORK_TRIAL = "WORK_TRIAL"
    PAY_SUBSIDY = "PAY_SUBSIDY"
    START_UP_GRANT = "START_UP_GRANT"
    SELF_MOTIVATED_STUDY = "SELF_MOTIVATED_STUDY"


class ParticipationKind(StrEnum):
    """What a service provider reports about participation."""

    START = "START"
    ABSENCE = "ABSENCE"
    INTERRUPTION = "INTERRUPTION"
    COMPLETION = "COMPLETION"


class InterruptionReason(StrEnum):
    """Why participation in a service was interrupted."""

    EMPLOYMENT = "EMPLOYMENT"
    ILLNESS = "ILLNESS"
    PERSONAL_REASONS = "PERSONAL_REASONS"
    UNSUITABLE_SERVICE = "UNSUITABLE_SERVICE"
    OTHER = "OTHER"


class EmploymentForm(StrEnum):
    """Form of an employment that ends or pauses job search."""

    PERMANENT_FULL_TIME = "PERMANENT_FULL_TIME"
    PERMANENT_PART_TIME = "PERMANENT_PART_TIME"
    FIXED_TERM_FULL_TIME = "FIXED_TERM_FULL_TIME"
    FIXED_TERM_PART_TIME = "FIXED_TERM_PART_TIME"
    PAY_SUBSIDISED = "PAY_SUBSIDISED"
    ENTREPRENEUR = "ENTREPRENEUR"


class JobSearchEndReason(StrEnum):
    """Why a job-search spell ended."""

    EMPLOYED = "EMPLOYED"
    EDUCATION = "EDUCATION"
    OUTSIDE_LABOUR_FORCE = "OUTSIDE_LABOUR_FORCE"
    MOVED_OUT_OF_AREA = "MOVED_OUT_OF_AREA"
    NOT_RENEWED = "NOT_RENEWED"
    OTHER = "OTHER"
