//! `NullableF64`: an optional float that binds as a typed SQL NULL on every backend.
//!
//! Why: sqlx 0.8.6's `Any` driver sends a `None::<f64>` to PostgreSQL as a `float4`
//! NULL (its `Null(Double)` and `Null(Real)` arms are swapped). The prepared statement
//! it caches then declares that parameter `float4`, and the next execution with a real
//! `f64` on that connection fails with "incorrect binary data format in bind parameter".
//! Binding the NULL as an `f32`'s (`Null(Real)`) makes the driver declare `float8`, the column's own
//! type; SQLite ignores the kind of a NULL.

use sqlx::Database;
use sqlx::any::{Any, AnyTypeInfo};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::types::Type;

/// An `Option<f64>` to bind to a `DOUBLE PRECISION` column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NullableF64(pub Option<f64>);

impl Type<Any> for NullableF64 {
    fn type_info() -> AnyTypeInfo {
        <f64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        <f64 as Type<Any>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Any> for NullableF64 {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        match self.0 {
            Some(value) => <f64 as Encode<'q, Any>>::encode_by_ref(&value, buf),
            // A `None::<f32>` is `Null(Real)`, which the driver sends as a float8 NULL:
            // see the module documentation.
            None => <Option<f32> as Encode<'q, Any>>::encode_by_ref(&None, buf),
        }
    }
}
