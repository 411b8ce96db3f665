//! Type-erased processors, as held by a runtime's registry.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Processor, ProcessorConfig};
use crate::plan::{Contract, Plan};
use crate::runtime::inspect::{KeptInput, ProcessorView};
use crate::{Ctx, Error};

/// A processor packaged for a registry: name, configuration, plan and an erased entry point.
///
/// Make one with [`Registration::of`]; hand a list to `register_many`.
#[derive(Clone)]
pub struct Registration(pub(crate) Arc<dyn ErasedProcessor>);

impl Registration {
    /// Packages `processor`.
    pub fn of<P: Processor>(processor: P) -> Self {
        Registration(Arc::new(processor))
    }

    /// The processor's name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The processor's configuration.
    pub fn config(&self) -> &ProcessorConfig {
        self.0.config()
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl<P: Processor> From<P> for Registration {
    fn from(processor: P) -> Self {
        Registration::of(processor)
    }
}

/// The object-safe face of a [`Processor`].
pub(crate) trait ErasedProcessor: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn config(&self) -> &ProcessorConfig;
    fn plan(&self) -> Plan;
    fn contract(&self) -> Contract;
    fn input_type(&self) -> (TypeId, &'static str);
    fn output_type(&self) -> (TypeId, &'static str);
    /// What inspection shows of the processor.
    fn view(&self) -> ProcessorView;
    /// A copy of `input` to keep for inspection and retries, if it is the processor's `Input`.
    fn keep_input(&self, input: &(dyn Any + Send)) -> Option<KeptInput>;
    /// Runs the processor as the root of a run; `input` must be its `Input` type.
    fn run_erased<'a>(
        &'a self,
        input: Box<dyn Any + Send>,
        ctx: &'a Ctx,
    ) -> BoxFuture<'a, Result<Box<dyn Any + Send>, Error>>;
}

impl<P: Processor> ErasedProcessor for P {
    fn name(&self) -> &'static str {
        Processor::name(self)
    }
    fn config(&self) -> &ProcessorConfig {
        Processor::config(self)
    }
    fn plan(&self) -> Plan {
        Processor::plan(self)
    }
    fn contract(&self) -> Contract {
        Processor::contract(self)
    }
    fn input_type(&self) -> (TypeId, &'static str) {
        (TypeId::of::<P::Input>(), std::any::type_name::<P::Input>())
    }
    fn view(&self) -> ProcessorView {
        ProcessorView::of(self)
    }
    fn keep_input(&self, input: &(dyn Any + Send)) -> Option<KeptInput> {
        input.downcast_ref::<P::Input>().map(KeptInput::of)
    }
    fn output_type(&self) -> (TypeId, &'static str) {
        (
            TypeId::of::<P::Output>(),
            std::any::type_name::<P::Output>(),
        )
    }
    fn run_erased<'a>(
        &'a self,
        input: Box<dyn Any + Send>,
        ctx: &'a Ctx,
    ) -> BoxFuture<'a, Result<Box<dyn Any + Send>, Error>> {
        Box::pin(async move {
            let input = input
                .downcast::<P::Input>()
                .map_err(|_| Error::Configuration {
                    message: format!(
                        "processor `{}` takes `{}`",
                        Processor::name(self),
                        std::any::type_name::<P::Input>()
                    ),
                })?;
            let output = ctx.run(self, *input).await.map_err(|failed| failed.error)?;
            Ok(Box::new(output) as Box<dyn Any + Send>)
        })
    }
}
