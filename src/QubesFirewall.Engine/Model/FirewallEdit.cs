namespace QubesFirewall.Engine.Model;

/// <summary>A rule to insert; without a position it goes in before the final catch-all.</summary>
public sealed record RuleInsertion(FirewallRule Rule, int? Position = null);

/// <summary>
/// A rule to remove, identified by its number (0-based, among the rules qubesd shows) and its
/// exact text: numbers shift when rules expire or someone else edits the list, so a number
/// whose rule no longer has that text is refused, never guessed.
/// </summary>
public sealed record RuleRemoval(int Number, string Text);

/// <summary>
/// A change to one qube's rule list expressed as operations, so it can be re-applied to the list
/// as it is at write time (under the offline root's lock) or checked against it (live backend).
/// </summary>
public sealed record FirewallEdit(IReadOnlyList<RuleInsertion> Insertions, IReadOnlyList<RuleRemoval> Removals)
{
    private readonly IReadOnlyList<RuleInsertion> _insertions = Insertions;
    private readonly IReadOnlyList<RuleRemoval> _removals = Removals;
    private LastApplication _last;

    // Setting either (a copy made with `with`) forgets the last application.
    public IReadOnlyList<RuleInsertion> Insertions { get => _insertions; init { _insertions = value; _last = default; } }

    public IReadOnlyList<RuleRemoval> Removals { get => _removals; init { _removals = value; _last = default; } }

    public static FirewallEdit Insert(IEnumerable<RuleInsertion> insertions) => new(insertions.ToList(), []);

    public static FirewallEdit Remove(IEnumerable<RuleRemoval> removals) => new([], removals.ToList());

    public bool IsEmpty => Insertions.Count == 0 && Removals.Count == 0;

    /// <summary>Index of the final catch-all (the last rule matching everything), or -1.</summary>
    public static int FinalCatchAllIndex(IReadOnlyList<FirewallRule> rules)
    {
        for (var i = rules.Count - 1; i >= 0; i--)
            if (rules[i].IsCatchAll) return i;
        return -1;
    }

    /// <summary>
    /// Applies the edit to the visible rules (expired ones already left out). Removals first, then
    /// insertions in order; a rule whose exact text is already in the list is skipped, so running
    /// the same Add twice changes nothing. Several insertions at one position keep their order.
    /// </summary>
    public FirewallEditOutcome ApplyTo(IReadOnlyList<FirewallRule> visibleRules) => ApplyTo(visibleRules, out _);

    /// <summary>As <see cref="ApplyTo(IReadOnlyList{FirewallRule})"/>, with the index each insertion has in the result (-1 when
    /// it was skipped), so a planner need not look up 10,000 inserted rules in the result again.</summary>
    internal FirewallEditOutcome ApplyTo(IReadOnlyList<FirewallRule> visibleRules, out int[] insertedAt)
    {
        // The edit is applied when planned and again to the list read under the write's lock, mostly the same list: then the
        // outcome is the same (the rules in it equal, not the same objects), without the 10,000 texts of an Add hashed again.
        if (_last.Applied is { } last && SameRules(last.Input, visibleRules))
        {
            insertedAt = last.InsertedAt;
            return last.Outcome;
        }
        var outcome = Apply(visibleRules, out insertedAt);
        _last.Applied = new Application(visibleRules.ToArray(), outcome, insertedAt);
        return outcome;
    }

    private static bool SameRules(FirewallRule[] before, IReadOnlyList<FirewallRule> now)
    {
        if (before.Length != now.Count) return false;
        for (var i = 0; i < before.Length; i++)
            if (!before[i].Equals(now[i])) return false;
        return true;
    }

    private FirewallEditOutcome Apply(IReadOnlyList<FirewallRule> visibleRules, out int[] insertedAt)
    {
        insertedAt = new int[Insertions.Count];
        var rules = new List<FirewallRule>(visibleRules.Count + Insertions.Count); // no regrowth for 10,000 insertions
        rules.AddRange(visibleRules);
        var removed = new List<RuleRemoval>();
        foreach (var removal in Removals.OrderByDescending(r => r.Number).DistinctBy(r => r.Number))
        {
            if (removal.Number < 0 || removal.Number >= visibleRules.Count)
                throw new QubesFirewallException(ErrorIds.RuleNumberOutOfRange, FailureKind.ObjectNotFound,
                    $"There is no rule number {removal.Number} (the list has {visibleRules.Count} rules, numbered from 0). Nothing was changed.", removal);
            var actual = visibleRules[removal.Number].Text;
            if (!string.Equals(actual, removal.Text, StringComparison.Ordinal))
                throw new QubesFirewallException(ErrorIds.RuleMismatch, FailureKind.InvalidOperation,
                    $"Rule number {removal.Number} is now '{actual}', not '{removal.Text}': the list changed since it was read (a rule expired or someone else edited it). Nothing was changed; list the rules again and retry.", removal);
            rules.RemoveAt(removal.Number);
            removed.Add(removal);
        }

        // The rules by their text, without making the texts (RuleText.SameTextComparer).
        var texts = new HashSet<FirewallRule>(rules.Count + Insertions.Count, RuleText.SameTextComparer.Instance);
        foreach (var rule in rules) texts.Add(rule);
        var skipped = new List<FirewallRule>();
        var offsets = new Dictionary<int, int>();
        var finalCatchAll = FinalCatchAllIndex(rules);
        if (finalCatchAll >= 0 && Insertions.All(i => i.Position is null))
        {
            // Each rule goes in just before the final catch-all, which so stays the final one: the new rules end up there in
            // their order. Put in at once: one at a time, each insertion moved the catch-all (a 10,000-rule Add: 10,000 moves).
            var added = new List<FirewallRule>(Insertions.Count);
            for (var i = 0; i < Insertions.Count; i++)
            {
                var rule = Insertions[i].Rule;
                if (texts.Add(rule)) { insertedAt[i] = finalCatchAll + added.Count; added.Add(rule); }
                else { insertedAt[i] = -1; skipped.Add(rule); }
            }
            rules.InsertRange(finalCatchAll, added);
        }
        else
        {
            foreach (var insertion in Insertions)
            {
                if (!texts.Add(insertion.Rule)) { skipped.Add(insertion.Rule); continue; }
                int index;
                if (insertion.Position is { } position)
                {
                    if (position < 0 || position > rules.Count)
                        throw QubesFirewallException.Invalid(ErrorIds.PositionOutOfRange,
                            $"Position {position} is past the end of the list ({rules.Count} rules; use {rules.Count} to append). Nothing was changed.", insertion);
                    offsets.TryGetValue(position, out var offset);
                    index = Math.Min(position + offset, rules.Count);
                    offsets[position] = offset + 1;
                }
                else
                {
                    var catchAll = FinalCatchAllIndex(rules);
                    index = catchAll < 0 ? rules.Count : catchAll;
                }
                rules.Insert(index, insertion.Rule);
            }
            // Later insertions moved the earlier ones: where each ended up, from the result.
            var positions = new Dictionary<FirewallRule, int>(rules.Count, ReferenceEqualityComparer.Instance);
            for (var i = 0; i < rules.Count; i++) positions[rules[i]] = i;
            for (var i = 0; i < Insertions.Count; i++) insertedAt[i] = positions.GetValueOrDefault(Insertions[i].Rule, -1);
        }
        if (rules.Count == 0 && visibleRules.Count > 0)
            throw new QubesFirewallException(ErrorIds.EmptyRuleList, FailureKind.InvalidOperation,
                "This would remove every rule of the qube. qubesd's Admin API cannot set an empty list (and a qube without rules has all its traffic dropped); keep at least a final catch-all such as 'action=drop'. Nothing was changed.", this);
        return new FirewallEditOutcome(rules, removed, skipped);
    }

    private sealed record Application(FirewallRule[] Input, FirewallEditOutcome Outcome, int[] InsertedAt);

    /// <summary>The last list the edit was applied to (a copy) and what came of it. Equal to any other, so it takes no part in
    /// the record's equality or hash code.</summary>
    private struct LastApplication : IEquatable<LastApplication>
    {
        public Application? Applied;

        public readonly bool Equals(LastApplication other) => true;

        public override readonly bool Equals(object? obj) => obj is LastApplication;

        public override readonly int GetHashCode() => 0;
    }
}

/// <summary>The rule list after an edit, and what the edit did.</summary>
public sealed record FirewallEditOutcome(IReadOnlyList<FirewallRule> Rules, IReadOnlyList<RuleRemoval> Removed, IReadOnlyList<FirewallRule> AlreadyPresent);
