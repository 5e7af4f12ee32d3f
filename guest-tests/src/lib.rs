//! bigbar's guest tests and the rule model they check against.
