package dev.cardbus.isohost;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import org.jpos.iso.ISOException;
import org.jpos.iso.ISOMsg;
import org.jpos.security.ARPCMethod;
import org.jpos.security.EncryptedPIN;
import org.jpos.security.MKDMethod;
import org.jpos.security.SKDMethod;
import org.jpos.security.SMAdapter;
import org.jpos.security.SMException;
import org.jpos.security.SecureDESKey;
import org.jpos.security.jceadapter.JCESecurityModule;
import org.jpos.tlv.TLVList;

/**
 * The bank's decisions. Authorization checks, in order: card known (14) -> status (lost 41,
 * stolen 43, refused 05) -> expiry (54) -> currency (12) -> ARQC (82, jPOS JCESecurityModule:
 * MKD option A, EMV common session key) -> ATC replay (94) -> PIN (ISO 9564 format 0 under the
 * zone PIN key, Visa PVV: 55, and 75 at the third wrong PIN) -> funds (51) -> approve (00) and
 * hold the amount. The ARPC (method 1, ARC = DE 39) goes back in DE 55 tag 91 whenever the ARQC
 * verified. A retransmitted 0100 gets the stored answer; 0400/0401 release the hold once.
 */
final class Bank {
    static final int MAX_PIN_TRIES = 3;
    static final int KEPT_TRANSACTIONS = 200_000;
    /** The CDOL1 data the CardBus cards' ARQC covers, in order (then AIP and ATC). */
    static final int[] ARQC_TAGS = {0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37,
        0x82, 0x9F36};

    static final class Answer {
        final ISOMsg msg;
        final long delayMs;
        final String behaviour;
        final String stan;

        Answer(ISOMsg msg, long delayMs, String behaviour, String stan) {
            this.msg = msg;
            this.delayMs = delayMs;
            this.behaviour = behaviour;
            this.stan = stan;
        }
    }

    private static final class Txn {
        final String pan;
        final long amount;
        final boolean approved;
        final ISOMsg answer;
        boolean reversed;

        Txn(String pan, long amount, boolean approved, ISOMsg answer) {
            this.pan = pan;
            this.amount = amount;
            this.approved = approved;
            this.answer = answer;
        }
    }

    private final JCESecurityModule sm;
    private final SecureDESKey zpk;
    private final SecureDESKey imk;
    private final SecureDESKey pvk;
    private final CardTable cards;
    private final Map<String, Txn> txns = new LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, Txn> eldest) {
            return size() > KEPT_TRANSACTIONS;
        }
    };
    private long authCounter;

    Bank(JCESecurityModule sm, SecureDESKey zpk, SecureDESKey imk, SecureDESKey pvk,
         CardTable cards) {
        this.sm = sm;
        this.zpk = zpk;
        this.imk = imk;
        this.pvk = pvk;
        this.cards = cards;
    }

    /** The answer to ``m`` (null: none). Runs on the host's one worker thread. */
    Answer answer(ISOMsg m) throws ISOException, IOException {
        String mti = m.getMTI();
        switch (mti) {
            case "0800":
                return network(m);
            case "0100":
                return authorize(m);
            case "0400":
            case "0401":
                return reverse(m);
            default:
                CardBusIsoHost.log("ignored mti=" + mti);
                return null;
        }
    }

    private static ISOMsg reply(ISOMsg m, String mti, int... copy) throws ISOException {
        ISOMsg r = new ISOMsg(mti);
        for (int f : copy) {
            if (m.hasField(f)) {
                r.set(f, m.getString(f));
            }
        }
        return r;
    }

    private Answer network(ISOMsg m) throws ISOException {
        ISOMsg r = reply(m, "0810", 7, 11, 41, 70);
        r.set(39, "00");
        CardBusIsoHost.log("mti=0800 de70=" + m.getString(70) + " stan=" + m.getString(11));
        return new Answer(r, 0, "normal", m.getString(11));
    }

    private static String key(ISOMsg m) {
        return m.getString(41) + "|" + m.getString(11) + "|" + m.getString(7);
    }

    private Answer authorize(ISOMsg m) throws ISOException, IOException {
        String stan = m.getString(11);
        Txn seen = txns.get(key(m));
        if (seen != null) {
            CardBusIsoHost.log("mti=0100 stan=" + stan + " retransmission: stored answer");
            return new Answer(seen.answer, 0, "normal", stan);
        }
        ISOMsg r = reply(m, "0110", 3, 4, 7, 11, 12, 13, 41, 42, 49);
        CardTable.Card card = cards.find(m.getString(2));
        if (card != null && m.getString(3).startsWith("31")) {
            r.set(39, "00");
            r.set(54, "0002" + card.currency + "C" + String.format("%012d", card.available));
            CardBusIsoHost.log("mti=0100 balance inquiry card=" + card.masked());
            return new Answer(r, 0, "normal", stan);
        }
        long amount = Long.parseLong(m.getString(4));
        TLVList icc = new TLVList();
        byte[] arqc = null;
        String code;
        try {
            if (m.hasField(55)) {
                icc.unpack(m.getBytes(55));
                arqc = icc.getValue(0x9F26);
            }
            code = check(m, card, icc, arqc, amount);
        } catch (IllegalArgumentException | SMException e) {
            CardBusIsoHost.log("mti=0100 stan=" + stan + " format error: " + e.getMessage());
            code = "30";
            arqc = null;
        }
        r.set(39, code);
        if (code.equals("00")) {
            r.set(38, String.format("A%05d", ++authCounter % 100000));
        }
        if (arqc != null && card != null && !code.equals("82") && !code.equals("14")) {
            r.set(55, arpc(card, icc, arqc, code));
        }
        txns.put(key(m), new Txn(m.getString(2), amount, code.equals("00"), r));
        CardBusIsoHost.log("mti=0100 stan=" + stan + " card="
                + (card == null ? "unknown" : card.masked()) + " amount=" + amount
                + " code=" + code);
        if (card == null) {
            return new Answer(r, 0, "normal", stan);
        }
        String behaviour = card.drop ? "drop" : card.answer;
        if (behaviour.equals("unknown-stan")) {
            ISOMsg odd = (ISOMsg) r.clone();
            odd.set(11, String.format("%06d", (Integer.parseInt(stan) + 500000) % 1000000));
            return new Answer(odd, card.delayMs, "normal", stan);
        }
        return new Answer(r, card.delayMs, behaviour, stan);
    }

    private String check(ISOMsg m, CardTable.Card card, TLVList icc, byte[] arqc, long amount)
            throws SMException {
        if (card == null) {
            return "14";
        }
        switch (card.status) {
            case "lost":
                return "41";
            case "stolen":
                return "43";
            case "active":
                break;
            default:
                return "05";
        }
        byte[] date = icc.getValue(0x9A);
        if (arqc == null || date == null) {
            throw new IllegalArgumentException("DE 55 lacks the ARQC or its data");
        }
        int yymm = Integer.parseInt(String.format("%02X%02X", date[0], date[1]));
        if (yymm > Integer.parseInt(card.expiry)) {
            return "54";
        }
        if (!card.currency.equals(m.getString(49))) {
            return "12";
        }
        byte[] atc = icc.getValue(0x9F36);
        if (!sm.verifyARQC(MKDMethod.OPTION_A, SKDMethod.EMV_CSKD, imk, card.pan, card.psn,
                arqc, atc, icc.getValue(0x9F37), arqcData(icc))) {
            return "82";
        }
        int atcValue = ((atc[0] & 0xFF) << 8) | (atc[1] & 0xFF);
        if (atcValue <= card.lastAtc) {
            return "94";
        }
        card.lastAtc = atcValue;
        if (m.hasField(52)) {
            if (card.pinTries >= MAX_PIN_TRIES) {
                return "75";
            }
            EncryptedPIN pin = new EncryptedPIN(m.getBytes(52), SMAdapter.FORMAT01, card.pan);
            if (!sm.verifyPVV(pin, zpk, pvk, null, card.pvki, card.pvv)) {
                card.pinTries++;
                return card.pinTries >= MAX_PIN_TRIES ? "75" : "55";
            }
            card.pinTries = 0;
        }
        if (amount > card.available) {
            return "51";
        }
        card.available -= amount;
        return "00";
    }

    /** CDOL1 data || AIP || ATC, padded as EMV pads a MAC (80 then 00s to 8 bytes). */
    private static byte[] arqcData(TLVList icc) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (int tag : ARQC_TAGS) {
            byte[] v = icc.getValue(tag);
            if (v == null) {
                throw new IllegalArgumentException(String.format("DE 55 lacks tag %X", tag));
            }
            out.writeBytes(v);
        }
        out.write(0x80);
        while (out.size() % 8 != 0) {
            out.write(0);
        }
        return out.toByteArray();
    }

    private byte[] arpc(CardTable.Card card, TLVList icc, byte[] arqc, String code)
            throws ISOException {
        try {
            byte[] arc = code.getBytes(StandardCharsets.US_ASCII);
            byte[] arpc = sm.generateARPC(MKDMethod.OPTION_A, SKDMethod.EMV_CSKD, imk, card.pan,
                    card.psn, arqc, icc.getValue(0x9F36), icc.getValue(0x9F37),
                    ARPCMethod.METHOD_1, arc, null);
            byte[] value = new byte[arpc.length + arc.length];
            System.arraycopy(arpc, 0, value, 0, arpc.length);
            System.arraycopy(arc, 0, value, arpc.length, arc.length);
            return new TLVList().append(0x91, value).pack();
        } catch (SMException e) {
            throw new ISOException("ARPC: " + e.getMessage());
        }
    }

    private Answer reverse(ISOMsg m) throws ISOException {
        String stan = m.getString(11);
        ISOMsg r = reply(m, "0410", 3, 4, 7, 11, 41, 42, 49, 90);
        String original = m.getString(90);
        Txn txn = original == null || original.length() < 20 ? null
                : txns.get(m.getString(41) + "|" + original.substring(4, 10) + "|"
                        + original.substring(10, 20));
        CardTable.Card card = null;
        if (txn != null) {
            try {
                card = cards.find(txn.pan);
            } catch (IOException e) {
                throw new ISOException("card file: " + e.getMessage());
            }
        }
        if (card != null && card.ignoreReversals > 0) {
            card.ignoreReversals--;
            CardBusIsoHost.log("mti=" + m.getMTI() + " stan=" + stan + " ignored (card flag)");
            return null;
        }
        String outcome;
        if (txn == null) {
            r.set(39, "25");
            outcome = "original not found";
        } else {
            r.set(39, "00");
            if (txn.approved && !txn.reversed) {
                txn.reversed = true;
                if (card != null) {
                    card.available += txn.amount;
                }
                outcome = "released " + txn.amount;
            } else {
                outcome = txn.approved ? "already reversed" : "original was declined";
            }
        }
        CardBusIsoHost.log("mti=" + m.getMTI() + " stan=" + stan + " reversal: " + outcome);
        return new Answer(r, 0, "normal", stan);
    }
}
