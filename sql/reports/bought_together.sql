-- title: Viewed and bought together
-- description: For each product, its strongest neighbours from `product_affinity` (kept by
--   `shoplake batch affinity` over the whole history): products viewed in the same session
--   (relation `viewed_together`) and bought in the same order (relation `bought_together`), with how often
--   (together, time-weighted as the live recommendations weigh it) and the score, best first,
--   up to `top` per product and relation.
-- role: marketing
-- param: product text = null : Only the neighbours of this product id.
-- param: relation text = null in (viewed_together, bought_together) : Only this relation.
-- param: top int = 5 : Neighbours per product and relation.
SELECT product_id, relation, rank, related_product_id, together, score
FROM product_affinity
WHERE rank <= $top
  AND ($product IS NULL OR product_id = $product)
  AND ($relation IS NULL OR relation = $relation)
ORDER BY product_id, relation, rank
