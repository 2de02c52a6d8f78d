using QubesFirewall.Engine.Model;
using QubesFirewall.TestQubesd.CoreAdmin;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// The module's rule grammar against the stand-in qubesd's, which is written from core-admin's
/// qubes/firewall.py without the module's code: every line the module accepts, qubesd accepts too and
/// reads as the same rule; the text the module sends comes back from admin.vm.firewall.Get exactly, and
/// qubesd stores in QubesDB what the module renders. The module may refuse more (it is stricter where a value could never work), never less.
/// </summary>
public sealed class TwoReadingsTests
{
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);

    private static IEnumerable<string> Lines()
    {
        string?[] actions = ["accept", "drop"];
        string?[] hosts = [null, "dst4=10.1.2.3", "dst4=10.1.2.0/24", "dst4=10.1.2.3/8", "dst4=0.0.0.0/0", "dst6=2001:db8::1", "dst6=2001:DB8::/32",
            "dst6=::ffff:10.1.2.3", "dsthost=example.com", "dsthost=10.0.0.1", "dsthost=Example.com", "dst4=010.0.0.1", "dstname=qubes-os.org",
            "dst4=2001:db8::/64", "dst6=10.0.0.0/8", "dsthost=a_b.example", "dst4=10.0.0.1/33", "dst4=10.0.0.1/032"];
        string?[] protos = [null, "tcp", "udp", "icmp", "TCP"];
        string?[] ports = [null, "80", "80-90", "0", "65535", "65536", "+80", "90-80", "080", "1_0"];
        string?[] icmp = [null, "8", "255", "256", "008"];
        string?[] special = [null, "dns"];
        string?[] expire = [null, "1900000000", "01900000000", "1700000000"];
        string?[] comments = [null, "intranet https", "a=b", "trailing "];
        var random = new Random(18);
        foreach (var a in actions)
        foreach (var h in hosts)
        foreach (var p in protos)
        foreach (var d in ports)
        foreach (var i in icmp)
        foreach (var s in special)
        {
            var words = new[] { "action=" + a, h, p is null ? null : "proto=" + p, d is null ? null : "dstports=" + d, i is null ? null : "icmptype=" + i,
                s is null ? null : "specialtarget=" + s, expire[random.Next(expire.Length)] is { } e ? "expire=" + e : null }.OfType<string>().ToList();
            // any key order: qubesd and the module both take the words as a set
            for (var n = words.Count - 1; n > 0; n--)
            {
                var k = random.Next(n + 1);
                (words[n], words[k]) = (words[k], words[n]);
            }
            var line = string.Join(' ', words);
            yield return comments[random.Next(comments.Length)] is { } c ? line + " comment=" + c : line;
        }
    }

    [Fact]
    public void Every_line_the_module_accepts_qubesd_accepts_as_the_same_rule_and_lists_as_the_module_sent_it()
    {
        int accepted = 0, refusedByModuleOnly = 0;
        var disagreements = new List<string>();
        foreach (var line in Lines())
        {
            QubesdRule? qubesd;
            try
            {
                qubesd = QubesdRule.FromApiString(line);
            }
            catch (RuleValueError)
            {
                qubesd = null;
            }
            if (!RuleText.TryParse(line, out var rule, out _, Now))
            {
                if (qubesd is not null) refusedByModuleOnly++;
                continue;
            }
            accepted++;
            if (qubesd is null)
            {
                disagreements.Add($"qubesd refuses what the module accepts: {line}");
                continue;
            }
            // The same rule: qubesd's listing of the line, read by the module, is the module's reading of it
            // (qubesd lists some values as given, e.g. an expire with leading zeros; the module writes them plainly).
            if (qubesd.ApiRule(Now) is { } listed && (!RuleText.TryParse(listed, out var relisted, out _, Now) || relisted!.Text != rule!.Text))
                disagreements.Add($"a different rule for {line}: qubesd lists '{listed}', the module reads '{rule!.Text}'");
            // What the module sends comes back exactly from Get, and QubesDB holds what the module renders.
            var sent = QubesdRule.FromApiString(rule!.Text);
            if (sent.ApiRule(Now) != (rule.IsExpiredAt(Now) ? null : rule.Text))
                disagreements.Add($"Get differs for {rule.Text}: qubesd '{sent.ApiRule(Now)}'");
            if (!rule.IsExpiredAt(Now) && sent.QubesDbRule(Now) != RuleText.FormatForQubesDb(rule))
                disagreements.Add($"QubesDB differs for {rule.Text}: qubesd '{sent.QubesDbRule(Now)}', module '{RuleText.FormatForQubesDb(rule)}'");
        }
        Assert.Empty(disagreements.Take(20));
        // both sides did real work: hundreds accepted by both, and the module's stricter refusals exist
        Assert.True(accepted > 500, $"{accepted} lines accepted");
        Assert.True(refusedByModuleOnly > 0, "the module refuses some lines qubesd takes (it is stricter)");
        Console.WriteLine($"{accepted} lines accepted by both, {refusedByModuleOnly} refused by the module only");
    }

    [Fact]
    public void A_rule_has_expired_once_its_second_has_begun_to_pass_for_both()
    {
        const string line = "action=accept expire=1800000000";
        var rule = RuleText.Parse(line, DateTimeOffset.FromUnixTimeSeconds(1_700_000_000));
        var qubesd = QubesdRule.FromApiString(line);
        var exactly = DateTimeOffset.FromUnixTimeSeconds(1_800_000_000);
        var halfPast = DateTimeOffset.FromUnixTimeMilliseconds(1_800_000_000_500);
        Assert.Equal(("action=accept expire=1800000000", false), (qubesd.ApiRule(exactly), rule.IsExpiredAt(exactly)));
        Assert.Equal(((string?)null, true), (qubesd.ApiRule(halfPast), rule.IsExpiredAt(halfPast)));
    }
}
