from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class CartItem(_message.Message):
    __slots__ = ("product_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    def __init__(self, product_id: str | None = ..., quantity: int | None = ...) -> None: ...

class AddItemRequest(_message.Message):
    __slots__ = ("item", "user_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item: CartItem
    def __init__(self, user_id: str | None = ..., item: CartItem | _Mapping | None = ...) -> None: ...

class EmptyCartRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: str | None = ...) -> None: ...

class GetCartRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: str | None = ...) -> None: ...

class Cart(_message.Message):
    __slots__ = ("items", "user_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    items: _containers.RepeatedCompositeFieldContainer[CartItem]
    def __init__(
        self, user_id: str | None = ..., items: _Iterable[CartItem | _Mapping] | None = ...
    ) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRecommendationsRequest(_message.Message):
    __slots__ = ("product_ids", "user_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: str | None = ..., product_ids: _Iterable[str] | None = ...) -> None: ...

class ListRecommendationsResponse(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Iterable[str] | None = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("categories", "description", "id", "name", "picture", "price_usd")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PICTURE_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    picture: str
    price_usd: Money
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        id: str | None = ...,
        name: str | None = ...,
        description: str | None = ...,
        picture: str | None = ...,
        price_usd: Money | _Mapping | None = ...,
        categories: _Iterable[str] | None = ...,
    ) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    def __init__(self, products: _Iterable[Product | _Mapping] | None = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: str | None = ...) -> None: ...

class SearchProductsRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: str | None = ...) -> None: ...

class SearchProductsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Product]
    def __init__(self, results: _Iterable[Product | _Mapping] | None = ...) -> None: ...

class GetQuoteRequest(_message.Message):
    __slots__ = ("address", "items")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    address: Address
    items: _containers.RepeatedCompositeFieldContainer[CartItem]
    def __init__(
        self, address: Address | _Mapping | None = ..., items: _Iterable[CartItem | _Mapping] | None = ...
    ) -> None: ...

class GetQuoteResponse(_message.Message):
    __slots__ = ("cost_usd",)
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    cost_usd: Money
    def __init__(self, cost_usd: Money | _Mapping | None = ...) -> None: ...

class ShipOrderRequest(_message.Message):
    __slots__ = ("address", "items")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    address: Address
    items: _containers.RepeatedCompositeFieldContainer[CartItem]
    def __init__(
        self, address: Address | _Mapping | None = ..., items: _Iterable[CartItem | _Mapping] | None = ...
    ) -> None: ...

class ShipOrderResponse(_message.Message):
    __slots__ = ("tracking_id",)
    TRACKING_ID_FIELD_NUMBER: _ClassVar[int]
    tracking_id: str
    def __init__(self, tracking_id: str | None = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("city", "country", "state", "street_address", "zip_code")
    STREET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    ZIP_CODE_FIELD_NUMBER: _ClassVar[int]
    street_address: str
    city: str
    state: str
    country: str
    zip_code: int
    def __init__(
        self,
        street_address: str | None = ...,
        city: str | None = ...,
        state: str | None = ...,
        country: str | None = ...,
        zip_code: int | None = ...,
    ) -> None: ...

class Money(_message.Message):
    __slots__ = ("currency_code", "nanos", "units")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    units: int
    nanos: int
    def __init__(
        self, currency_code: str | None = ..., units: int | None = ..., nanos: int | None = ...
    ) -> None: ...

class GetSupportedCurrenciesResponse(_message.Message):
    __slots__ = ("currency_codes",)
    CURRENCY_CODES_FIELD_NUMBER: _ClassVar[int]
    currency_codes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, currency_codes: _Iterable[str] | None = ...) -> None: ...

class CurrencyConversionRequest(_message.Message):
    __slots__ = ("to_code",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_CODE_FIELD_NUMBER: _ClassVar[int]
    to_code: str
    def __init__(self, to_code: str | None = ..., **kwargs) -> None: ...

class CreditCardInfo(_message.Message):
    __slots__ = (
        "credit_card_cvv",
        "credit_card_expiration_month",
        "credit_card_expiration_year",
        "credit_card_number",
    )
    CREDIT_CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_CVV_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_EXPIRATION_YEAR_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_EXPIRATION_MONTH_FIELD_NUMBER: _ClassVar[int]
    credit_card_number: str
    credit_card_cvv: int
    credit_card_expiration_year: int
    credit_card_expiration_month: int
    def __init__(
        self,
        credit_card_number: str | None = ...,
        credit_card_cvv: int | None = ...,
        credit_card_expiration_year: int | None = ...,
        credit_card_expiration_month: int | None = ...,
    ) -> None: ...

class ChargeRequest(_message.Message):
    __slots__ = ("amount", "credit_card")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_FIELD_NUMBER: _ClassVar[int]
    amount: Money
    credit_card: CreditCardInfo
    def __init__(
        self, amount: Money | _Mapping | None = ..., credit_card: CreditCardInfo | _Mapping | None = ...
    ) -> None: ...

class ChargeResponse(_message.Message):
    __slots__ = ("transaction_id",)
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    def __init__(self, transaction_id: str | None = ...) -> None: ...

class OrderItem(_message.Message):
    __slots__ = ("cost", "item")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    item: CartItem
    cost: Money
    def __init__(
        self, item: CartItem | _Mapping | None = ..., cost: Money | _Mapping | None = ...
    ) -> None: ...

class OrderResult(_message.Message):
    __slots__ = ("items", "order_id", "shipping_address", "shipping_cost", "shipping_tracking_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SHIPPING_TRACKING_ID_FIELD_NUMBER: _ClassVar[int]
    SHIPPING_COST_FIELD_NUMBER: _ClassVar[int]
    SHIPPING_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    shipping_tracking_id: str
    shipping_cost: Money
    shipping_address: Address
    items: _containers.RepeatedCompositeFieldContainer[OrderItem]
    def __init__(
        self,
        order_id: str | None = ...,
        shipping_tracking_id: str | None = ...,
        shipping_cost: Money | _Mapping | None = ...,
        shipping_address: Address | _Mapping | None = ...,
        items: _Iterable[OrderItem | _Mapping] | None = ...,
    ) -> None: ...

class SendOrderConfirmationRequest(_message.Message):
    __slots__ = ("email", "order")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    email: str
    order: OrderResult
    def __init__(self, email: str | None = ..., order: OrderResult | _Mapping | None = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("address", "credit_card", "email", "user_currency", "user_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CREDIT_CARD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    user_currency: str
    address: Address
    email: str
    credit_card: CreditCardInfo
    def __init__(
        self,
        user_id: str | None = ...,
        user_currency: str | None = ...,
        address: Address | _Mapping | None = ...,
        email: str | None = ...,
        credit_card: CreditCardInfo | _Mapping | None = ...,
    ) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: OrderResult
    def __init__(self, order: OrderResult | _Mapping | None = ...) -> None: ...

class AdRequest(_message.Message):
    __slots__ = ("context_keys",)
    CONTEXT_KEYS_FIELD_NUMBER: _ClassVar[int]
    context_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, context_keys: _Iterable[str] | None = ...) -> None: ...

class AdResponse(_message.Message):
    __slots__ = ("ads",)
    ADS_FIELD_NUMBER: _ClassVar[int]
    ads: _containers.RepeatedCompositeFieldContainer[Ad]
    def __init__(self, ads: _Iterable[Ad | _Mapping] | None = ...) -> None: ...

class Ad(_message.Message):
    __slots__ = ("redirect_url", "text")
    REDIRECT_URL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    redirect_url: str
    text: str
    def __init__(self, redirect_url: str | None = ..., text: str | None = ...) -> None: ...
