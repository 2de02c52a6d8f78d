using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

public class FirewallEditTests
{
    private static List<FirewallRule> Rules(params string[] lines) => lines.Select(l => RuleText.Parse(l)).ToList();

    private static readonly List<FirewallRule> Work = Rules("action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop");

    [Fact]
    public void Without_a_position_a_rule_goes_before_the_final_catch_all()
    {
        var outcome = FirewallEdit.Insert([new(RuleText.Parse("action=accept dsthost=example.com")), new(RuleText.Parse("action=accept dsthost=example.org"))]).ApplyTo(Work);
        Assert.Equal(["action=accept specialtarget=dns", "action=accept proto=icmp", "action=accept dsthost=example.com", "action=accept dsthost=example.org", "action=drop"], outcome.Rules.Select(r => r.Text));
    }

    [Fact]
    public void Rules_go_before_the_last_catch_all_in_their_order_also_new_catch_alls_and_repeats_are_skipped()
    {
        var list = Rules("action=accept dsthost=a.example", "action=accept", "action=accept dsthost=b.example", "action=drop", "action=accept dsthost=c.example");
        var insertions = new RuleInsertion[]
        {
            new(RuleText.Parse("action=drop dsthost=x.example")),
            new(RuleText.Parse("action=accept dsthost=a.example")),
            new(RuleText.Parse("action=accept expire=1900000000")),
            new(RuleText.Parse("action=drop dsthost=z.example")),
            new(RuleText.Parse("action=drop dsthost=x.example")),
        };
        var expected = new[]
        {
            "action=accept dsthost=a.example", "action=accept", "action=accept dsthost=b.example",
            "action=drop dsthost=x.example", "action=accept expire=1900000000", "action=drop dsthost=z.example",
            "action=drop", "action=accept dsthost=c.example",
        };
        var outcome = FirewallEdit.Insert(insertions).ApplyTo(list);
        Assert.Equal(expected, outcome.Rules.Select(r => r.Text));
        Assert.Equal([insertions[1].Rule, insertions[4].Rule], outcome.AlreadyPresent);
        Assert.Same(insertions[0].Rule, outcome.Rules[3]);

        // The same rules one at a time (a position elsewhere in the edit takes that path) land in the same places.
        var withPosition = FirewallEdit.Insert([.. insertions, new(RuleText.Parse("action=drop dsthost=p.example"), 0)]).ApplyTo(list);
        Assert.Equal(["action=drop dsthost=p.example", .. expected], withPosition.Rules.Select(r => r.Text));
    }

    [Fact]
    public void Without_a_catch_all_a_rule_is_appended()
    {
        var outcome = FirewallEdit.Insert([new(RuleText.Parse("action=drop dsthost=example.com"))]).ApplyTo(Rules("action=accept specialtarget=dns"));
        Assert.Equal("action=drop dsthost=example.com", outcome.Rules[^1].Text);
    }

    [Fact]
    public void Rules_at_one_position_keep_their_order_and_the_length_appends()
    {
        var outcome = FirewallEdit.Insert([new(RuleText.Parse("action=drop dsthost=a.example"), 0), new(RuleText.Parse("action=drop dsthost=b.example"), 0), new(RuleText.Parse("action=drop dsthost=c.example"), 3)]).ApplyTo(Work);
        Assert.Equal(["action=drop dsthost=a.example", "action=drop dsthost=b.example", "action=accept specialtarget=dns", "action=drop dsthost=c.example", "action=accept proto=icmp", "action=drop"], outcome.Rules.Select(r => r.Text));
        Assert.Equal("action=accept", FirewallEdit.Insert([new(RuleText.Parse("action=accept"), 3)]).ApplyTo(Work).Rules[3].Text);
    }

    [Fact]
    public void A_position_past_the_end_is_refused_not_silently_appended()
    {
        var ex = Assert.Throws<QubesFirewallException>(() => FirewallEdit.Insert([new(RuleText.Parse("action=accept"), 4)]).ApplyTo(Work));
        Assert.Equal("PositionOutOfRange", ex.ErrorId);
    }

    [Fact]
    public void Adding_a_rule_that_is_already_there_changes_nothing()
    {
        var outcome = FirewallEdit.Insert([new(RuleText.Parse("action=accept proto=icmp"))]).ApplyTo(Work);
        Assert.Equal(Work.Select(r => r.Text), outcome.Rules.Select(r => r.Text));
        Assert.Single(outcome.AlreadyPresent);
    }

    [Fact]
    public void Removal_matches_number_and_text_and_refuses_a_mismatch()
    {
        var outcome = FirewallEdit.Remove([new(1, "action=accept proto=icmp"), new(0, "action=accept specialtarget=dns")]).ApplyTo(Work);
        Assert.Equal(["action=drop"], outcome.Rules.Select(r => r.Text));

        var ex = Assert.Throws<QubesFirewallException>(() => FirewallEdit.Remove([new(1, "action=accept specialtarget=dns")]).ApplyTo(Work));
        Assert.Equal("RuleMismatch", ex.ErrorId);
        Assert.Equal("RuleNumberOutOfRange", Assert.Throws<QubesFirewallException>(() => FirewallEdit.Remove([new(3, "action=drop")]).ApplyTo(Work)).ErrorId);
    }

    [Fact]
    public void An_edit_applied_again_follows_the_list_it_is_applied_to()
    {
        var edit = FirewallEdit.Insert([new(RuleText.Parse("action=accept dsthost=example.com"))]);
        var first = edit.ApplyTo(Work);
        Assert.Equal(["action=accept specialtarget=dns", "action=accept proto=icmp", "action=accept dsthost=example.com", "action=drop"], first.Rules.Select(r => r.Text));
        // An equal list read again (other objects) gives the same outcome.
        Assert.Same(first, edit.ApplyTo(Rules("action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop")));
        // Another list gives its own.
        var changed = edit.ApplyTo(Rules("action=accept dsthost=example.com", "action=drop"));
        Assert.Equal(["action=accept dsthost=example.com", "action=drop"], changed.Rules.Select(r => r.Text));
        Assert.Single(changed.AlreadyPresent);
        var longer = edit.ApplyTo(Rules("action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop expire=1900000000", "action=drop"));
        Assert.Equal(["action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop expire=1900000000", "action=accept dsthost=example.com", "action=drop"], longer.Rules.Select(r => r.Text));
        // A copy with other insertions does not keep the outcome of the edit it was copied from.
        var other = edit with { Insertions = [new(RuleText.Parse("action=accept dsthost=example.org"))] };
        Assert.Contains("action=accept dsthost=example.org", other.ApplyTo(Work).Rules.Select(r => r.Text));
    }
}

public class FirewallEditEmptyListTests
{
    [Fact]
    public void Removing_every_rule_is_refused_as_qubesd_cannot_set_an_empty_list()
    {
        var rules = new[] { RuleText.Parse("action=accept proto=icmp"), RuleText.Parse("action=drop") };
        var ex = Assert.Throws<QubesFirewallException>(() => FirewallEdit.Remove([new(0, "action=accept proto=icmp"), new(1, "action=drop")]).ApplyTo(rules));
        Assert.Equal("EmptyRuleList", ex.ErrorId);
    }
}
